"""Fencing without holes, with real processes: a holder stopped (SIGSTOP) between its fence check and its
rename loses to the attempt that took over (nothing of it lands, its delete removes nothing); a corrupt
claim file is named and taken over after the timeout; a lease that cannot be taken is an error; the
heartbeat survives file system errors; a holder whose own heartbeat is too old stops committing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import REPO
from drills import record_fault

from upft_ray.io import durable
from upft_ray.io.claims import claim_path, current_epoch, read_holder
from upft_ray.io.fencing import ENV, Fenced, check_fence
from upft_ray.io.lease import LeaseError, LeaseHeld, acquire, run_lease

# A holder that stops itself (SIGSTOP) right after its fence check passes, inside the commit it is asked
# for: "json" (replace a manifest), "new" (a first-commit-wins chunk summary), "delete" (the export's
# removal of train/final). Woken up (SIGCONT), it finishes the commit and says how it ended.
PAUSED_HOLDER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from upft_ray.io import durable
    from upft_ray.io.fencing import Fenced
    from upft_ray.io.lease import run_lease
    from upft_ray.io.manifests import write_json_atomic
    real_check = durable.check_fence

    def check_then_stop(path):
        real_check(path)
        print("checked", flush=True)
        os.kill(os.getpid(), signal.SIGSTOP)

    run, what = Path(sys.argv[1]), sys.argv[2]
    with run_lease(run) as lease:
        print("held", lease.epoch, flush=True)
        durable.check_fence = check_then_stop
        try:
            if what == "json":
                write_json_atomic(run / "sample" / "manifest.json", {"by": "old"})
            elif what == "new":
                tmp = durable.temp_path(run / "sample" / "chunks" / "chunk-000001.json")
                tmp.write_text('{"by": "old"}')
                print("won" if durable.commit_new_file(tmp, run / "sample" / "chunks" / "chunk-000001.json") else "lost")
            else:
                durable.remove_path(run / "train" / "final")
            print("landed", flush=True)
        except Fenced as err:
            print("fenced", err, flush=True)
""")


def child_env(timeout_s: float) -> dict:
    env = {k: v for k, v in os.environ.items() if k != ENV}
    return {**env, "PYTHONPATH": str(REPO), "UPFT_LEASE_TIMEOUT_S": str(timeout_s)}


def _stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()[0] == "T"


def start_paused_holder(run: Path, what: str, timeout_s: float = 3) -> subprocess.Popen:
    """Start a holder that commits ``what`` and stops inside its check-to-rename window; return it stopped."""
    proc = subprocess.Popen([sys.executable, "-c", PAUSED_HOLDER, str(run), what], stdout=subprocess.PIPE, text=True,
                            env=child_env(timeout_s))
    assert proc.stdout.readline().split()[0] == "held"
    assert proc.stdout.readline().strip() == "checked"
    deadline = time.time() + 30
    while not _stopped(proc.pid) and time.time() < deadline:
        time.sleep(0.02)
    assert _stopped(proc.pid)
    return proc


def take_over(run: Path, timeout_s: float = 3):
    """Wait out the stopped holder's heartbeat and take the run over (the current process holds it)."""
    time.sleep(timeout_s + 1)
    return run_lease(run)


@pytest.fixture(autouse=True)
def _unleased(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)


def _finish(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGCONT)
    out, _ = proc.communicate(timeout=60)
    return out


@pytest.mark.parametrize("what", ["json", "new"])
def test_a_holder_paused_between_check_and_rename_loses_and_lands_nothing(tmp_path, what):
    run = tmp_path / "run"
    holder = start_paused_holder(run, what)
    stopped_at = time.time()
    try:
        with take_over(run):
            taken_at = time.time()
            assert current_epoch(run / ".lease") == 2
            target = run / "sample" / ("manifest.json" if what == "json" else "chunks/chunk-000001.json")
            durable.write_text_durably(target, '{"by": "new"}')
            out = _finish(holder)
            assert "fenced" in out and "landed" not in out and "won" not in out, out
            assert json.loads(target.read_text()) == {"by": "new"}
            assert sorted(p.name for p in target.parent.iterdir()) == [target.name]  # no file of the old holder
            if what == "new":
                record_fault("a holder stopped inside its commit (after the fence check), run taken over", "any",
                             taken_at - stopped_at, None, 0, len(list(target.parent.iterdir())) - 1,
                             lease_timeout_s=3)
    finally:
        if holder.poll() is None:
            holder.kill()


def test_a_fenced_attempts_export_cannot_delete_the_new_holders_final(tmp_path):
    run = tmp_path / "run"
    (run / "train" / "final").mkdir(parents=True)
    (run / "train" / "final" / "model.safetensors").write_text("old weights")
    holder = start_paused_holder(run, "delete")  # stopped inside remove_path(train/final), its check passed
    try:
        with take_over(run):
            staging = durable.staging_for(run / "train" / "final")
            (staging / "model.safetensors").write_text("new weights")
            durable.remove_path(run / "train" / "final")
            durable.commit_dir(staging, run / "train" / "final")  # what export_hf_checkpoint does
            out = _finish(holder)
            assert "fenced" in out and "landed" not in out, out
            assert (run / "train" / "final" / "model.safetensors").read_text() == "new weights"
    finally:
        if holder.poll() is None:
            holder.kill()


@pytest.mark.parametrize("content", ['{"holder": "x:1:0:ab", "ti', "", "\x00\x01garbage", "[1, 2]"])
def test_a_corrupt_claim_file_is_named_and_taken_over_after_the_timeout(tmp_path, content, monkeypatch):
    monkeypatch.setenv("UPFT_LEASE_TIMEOUT_S", "30")
    run = tmp_path / "run"
    claim = claim_path(run / ".lease", 3)
    claim.parent.mkdir(parents=True)
    claim.write_text(content)
    with pytest.raises(LeaseHeld, match=f"claim file {claim}"):
        acquire(run)
    assert "claim file" in read_holder(run / ".lease").describe()
    os.utime(claim, (time.time() - 31, time.time() - 31))  # silent for longer than the timeout
    lease = acquire(run)
    assert lease.epoch == 4
    lease.release()


def test_a_lease_that_cannot_be_taken_is_an_error_never_an_unleased_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lease").write_text("a file where the lease directory goes")
    with pytest.raises(LeaseError, match=f"cannot take the lease on {run}"):
        acquire(run)
    from upft_ray.api import load_config, sample

    with pytest.raises(LeaseError):  # the stage entry points do not run without it
        sample(load_config(None, [f"run_dir={run}"]))


def test_the_heartbeat_survives_file_system_errors(tmp_path, monkeypatch):
    lease = acquire(tmp_path / "run", timeout_s=0.6)  # beats every 0.1 s
    real_utime, failures = os.utime, {"left": 5}

    def flaky_utime(path, *args, **kwargs):
        if failures["left"] and Path(path) == lease.path:
            failures["left"] -= 1
            raise OSError(5, "Input/output error (injected)")
        return real_utime(path, *args, **kwargs)

    monkeypatch.setattr(os, "utime", flaky_utime)
    time.sleep(1.5)
    assert failures["left"] == 0 and lease._thread.is_alive()
    assert read_holder(tmp_path / "run" / ".lease").age_s < 0.5  # beating again
    lease.release()


def test_a_holder_whose_own_heartbeat_is_too_old_stops_committing(tmp_path, monkeypatch):
    with run_lease(tmp_path / "run") as lease:
        lease._stop.set()  # its heartbeat thread stopped (a file system that refused every beat)
        lease._thread.join()
        check_fence(tmp_path / "run" / "x.json")
        os.utime(lease.path, (time.time() - lease.timeout_s - 5,) * 2)
        with pytest.raises(Fenced, match="last heartbeated"):
            durable.write_text_durably(tmp_path / "run" / "x.json", "late")
        assert not (tmp_path / "run" / "x.json").exists()
