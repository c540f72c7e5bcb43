"""Ray Train harness: a checkpoint staged by a worker that was killed before Ray Train copied it does not stay on
the node's disk."""

import os
import subprocess
import sys

from upft_ray.training.harness_ray import STAGING_PREFIX, remove_orphaned_staging


def test_staging_of_processes_that_are_gone_is_removed_and_live_ones_kept(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(timeout=60)
    orphan = tmp_path / f"{STAGING_PREFIX}{gone.pid}-x1"
    live = tmp_path / f"{STAGING_PREFIX}{os.getpid()}-x2"
    unrelated = tmp_path / "upft-other-1-x3"
    for folder in (orphan, live, unrelated):
        (folder / "step_00000003").mkdir(parents=True)
        (folder / "step_00000003" / "mp_rank_00_model_states.pt").write_bytes(b"0" * 1024)
    assert remove_orphaned_staging(tmp_path) == 1
    assert not orphan.exists() and live.is_dir() and unrelated.is_dir()
