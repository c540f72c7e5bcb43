"""Scratch directories named by their process (upft_ray/runtime/scratch.py): those of processes that are gone are
removed by the next process of their kind (a staged checkpoint of a killed Ray Train worker, the vLLM socket files of
a killed engine actor), a live process's are kept, and a process's own go when it exits, normally or by
``os._exit`` after ``remove_owned_scratch``."""

import os
import signal
import subprocess
import sys

import psutil
from conftest import REPO
from drills import gone_pid, survivors

from upft_ray.runtime.scratch import remove_orphaned_scratch, remove_scratch, scratch_dir, scratch_dirs
from upft_ray.training.harness_ray import STAGING_PREFIX


def test_directories_of_processes_that_are_gone_are_removed_and_live_and_other_ones_kept(tmp_path):
    zombie = subprocess.Popen(["sleep", "60"])
    zombie.send_signal(signal.SIGKILL)  # killed, not reaped yet: as a killed actor whose raylet died too
    assert survivors([zombie.pid]) == set() and psutil.pid_exists(zombie.pid)
    orphan = tmp_path / f"{STAGING_PREFIX}{gone_pid()}-x1"
    of_zombie = tmp_path / f"{STAGING_PREFIX}{zombie.pid}-x5"
    live = tmp_path / f"{STAGING_PREFIX}{os.getpid()}-x2"
    unrelated = tmp_path / "upft-other-1-x3"
    no_pid = tmp_path / f"{STAGING_PREFIX}abc-x4"
    for folder in (orphan, of_zombie, live, unrelated, no_pid):
        (folder / "step_00000003").mkdir(parents=True)
        (folder / "step_00000003" / "mp_rank_00_model_states.pt").write_bytes(b"0" * 1024)
    assert remove_orphaned_scratch(STAGING_PREFIX, tmp_path) == 2
    assert not orphan.exists() and not of_zombie.exists()
    assert live.is_dir() and unrelated.is_dir() and no_pid.is_dir()
    zombie.wait(timeout=10)


EXITS = """
import os, sys
from upft_ray.runtime.scratch import remove_owned_scratch, scratch_dir
first, second = scratch_dir("upft-test-"), scratch_dir("upft-test-")
(first / "f").write_text("x")
print(os.getpid(), first, second, flush=True)
if sys.argv[1] == "os_exit":
    remove_owned_scratch()
    os._exit(1)
"""


def test_a_process_removes_its_own_directories_at_exit_and_before_os_exit(tmp_path):
    for how in ("normal", "os_exit"):
        done = subprocess.run([sys.executable, "-c", EXITS, how], cwd=REPO, capture_output=True, text=True,
                              timeout=120, env={**os.environ, "TMPDIR": str(tmp_path)})
        pid, first, second = done.stdout.split()
        assert first.startswith(str(tmp_path / f"upft-test-{pid}-")), done.stderr
        assert not os.path.exists(first) and not os.path.exists(second), how


def test_a_directory_is_named_by_its_process(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    path, other = scratch_dir("upft-test-"), tmp_path / f"upft-test-{os.getpid()}1-x1"
    other.mkdir()  # another pid that starts with this one's digits
    assert path.parent == tmp_path and path.name.startswith(f"upft-test-{os.getpid()}-")
    assert scratch_dirs("upft-test-", os.getpid()) == [path] == scratch_dirs("upft-test-", os.getpid(), tmp_path)
    other.rmdir()
    assert remove_orphaned_scratch("upft-test-", tmp_path) == 0 and path.is_dir()
    remove_scratch(path)
    assert not path.exists()


FORKS = """
import os, sys
from upft_ray.runtime.scratch import scratch_dir
path = scratch_dir("upft-test-")
child = os.fork()
if child == 0:
    sys.exit(0)  # a normal exit: the atexit hook runs in the child, which made nothing
os.waitpid(child, 0)
print(path.is_dir(), flush=True)
"""


def test_a_forked_child_leaves_its_parents_directories_alone(tmp_path):
    done = subprocess.run([sys.executable, "-c", FORKS], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TMPDIR": str(tmp_path)})
    assert done.stdout.split() == ["True"], done.stderr
    assert not list(tmp_path.glob("upft-test-*"))  # and the parent removed it at its own exit
