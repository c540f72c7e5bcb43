"""The run-directory lease, with real processes: refusal, takeover of a silent holder, racing takers,
and a fenced late write. Holders are child processes this test starts (and stops by their PID)."""

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

from upft_ray.io import lease as run_lease
from upft_ray.io.claims import claim_path, current_epoch, read_holder
from upft_ray.io.lease import LeaseHeld, acquire
from upft_ray.io.lease import run_lease as hold

# A holder: takes the lease, says so, then on each stdin line tries to commit a manifest in the run.
HOLDER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from upft_ray.io.lease import run_lease
    from upft_ray.io.fencing import Fenced
    from upft_ray.io.manifests import write_json_atomic
    run = Path(sys.argv[1])
    with run_lease(run) as lease:
        print("held", lease.epoch, flush=True)
        for line in sys.stdin:
            try:
                write_json_atomic(run / "sample" / "manifest.json", {"epoch": lease.epoch})
                print("landed", flush=True)
            except Fenced as err:
                print("fenced", err, flush=True)
""")

# A taker: waits for a common start time, then tries once.
TAKER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from upft_ray.io.lease import acquire, LeaseHeld
    start = float(sys.argv[2])
    time.sleep(max(0.0, start - time.time()))
    try:
        lease = acquire(sys.argv[1])
    except LeaseHeld as err:
        print("refused", err, flush=True)
    else:
        print("won", lease.epoch, flush=True)
        done = Path(sys.argv[3])
        while not done.exists():  # keep heartbeating until every loser has looked
            time.sleep(0.05)
        lease.release()
""")


def child_env(timeout_s: float) -> dict:
    env = {k: v for k, v in os.environ.items() if k != run_lease.ENV}
    return {**env, "PYTHONPATH": str(REPO), "UPFT_LEASE_TIMEOUT_S": str(timeout_s)}


def start_holder(run: Path, timeout_s: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env=child_env(timeout_s))
    assert proc.stdout.readline().split()[0] == "held"
    return proc


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGCONT)
    proc.kill()
    proc.wait(timeout=10)


def test_live_lease_refuses_second_attempt(tmp_path, monkeypatch):
    monkeypatch.delenv(run_lease.ENV, raising=False)
    run = tmp_path / "run"
    holder = start_holder(run, timeout_s=60)
    try:
        with pytest.raises(LeaseHeld, match=rf"in use by another attempt: holder \S+:{holder.pid}:\S+ \(epoch 1, "
                                            r"heartbeat \d+\.\d s ago, timeout 60 s\)"):
            acquire(run)
        # The CLI refuses on one line with exit 2, before loading anything (no config on disk is needed).
        cli = subprocess.run([sys.executable, "-m", "upft_ray.cli", "sample", "--run-dir", str(run)],
                             capture_output=True, text=True, env=child_env(60), timeout=120)
        assert cli.returncode == 2, cli.stderr
        assert cli.stderr.strip().count("\n") == 0 and "in use by another attempt" in cli.stderr
        assert f":{holder.pid}:" in cli.stderr
        job = subprocess.run([sys.executable, str(REPO / "jobs" / "upft_pipeline.py"), "--config",
                              str(REPO / "configs" / "quickstart.yaml"), "--stage", "sample", f"run_dir={run}"],
                             capture_output=True, text=True, env=child_env(60), timeout=120)
        assert job.returncode == 2 and "in use by another attempt" in job.stderr, job.stderr
        assert current_epoch(run / ".lease") == 1  # refusing claimed nothing
    finally:
        stop(holder)


def test_silent_holder_is_taken_over_and_its_late_write_is_fenced(tmp_path, monkeypatch):
    monkeypatch.delenv(run_lease.ENV, raising=False)
    run = tmp_path / "run"
    holder = start_holder(run, timeout_s=4)
    try:
        holder.stdin.write("commit\n")
        holder.stdin.flush()
        assert holder.stdout.readline().startswith("landed")  # the holder's own commits land
        os.kill(holder.pid, signal.SIGSTOP)  # frozen (a partitioned pod): its heartbeat stops
        with pytest.raises(LeaseHeld):
            acquire(run, timeout_s=4)  # not yet silent for 4 s
        time.sleep(5)
        assert not read_holder(run / ".lease").live()
        with hold(run) as lease:
            assert lease.epoch == 2
            os.kill(holder.pid, signal.SIGCONT)  # the old attempt wakes up and tries to commit
            holder.stdin.write("commit\n")
            holder.stdin.flush()
            line = holder.stdout.readline()
            assert line.startswith("fenced") and "epoch 1 (this attempt) to 2" in line, line
            assert json.loads((run / "sample" / "manifest.json").read_text()) == {"epoch": 1}  # untouched
            assert current_epoch(run / ".lease") == 2
        # Released on exit: the next attempt takes over at once, with a higher epoch.
        with hold(run) as again:
            assert again.epoch == 3
    finally:
        stop(holder)


def test_racing_takers_exactly_one_wins(tmp_path, monkeypatch):
    monkeypatch.delenv(run_lease.ENV, raising=False)
    run = tmp_path / "run"
    stale = claim_path(run / ".lease", 4)
    stale.parent.mkdir(parents=True)
    stale.write_text(json.dumps({"holder": "gone:1:0:x", "timeout_s": 1}))
    os.utime(stale, (time.time() - 30, time.time() - 30))
    for round_ in range(2):
        start, done = time.time() + 1.5, tmp_path / f"done-{round_}"
        takers = [subprocess.Popen([sys.executable, "-c", TAKER, str(run), str(start), str(done)],
                                   stdout=subprocess.PIPE, text=True, env=child_env(30)) for _ in range(4)]
        deadline = time.time() + 60
        while sum(p.poll() is not None for p in takers) < 3 and time.time() < deadline:
            time.sleep(0.05)
        done.touch()  # the three losers have answered: the winner may release
        outcomes = [p.communicate(timeout=60)[0].split()[0] for p in takers]
        assert sorted(outcomes) == ["refused"] * 3 + ["won"], outcomes
        assert current_epoch(run / ".lease") == 5 + round_  # one claim per round, no epoch skipped


def test_crashed_taker_and_reentrancy(tmp_path, monkeypatch):
    monkeypatch.delenv(run_lease.ENV, raising=False)
    run = tmp_path / "run"
    half = claim_path(run / ".lease", 1)  # a taker that died between its O_EXCL create and its write
    half.parent.mkdir(parents=True)
    half.touch()
    with pytest.raises(LeaseHeld):
        acquire(run, timeout_s=60)
    os.utime(half, (time.time() - 120, time.time() - 120))
    with hold(run) as lease:
        assert lease.epoch == 2
        with hold(run / "runs" / "a") as inner:  # a sweep's run inside the leased directory
            assert inner is None and current_epoch(run / "runs" / "a" / ".lease") == 0
        assert os.environ[run_lease.ENV]
    assert run_lease.ENV not in os.environ


def test_every_stage_entry_point_runs_through_the_one_leased_helper(monkeypatch):
    from upft_ray.orchestration import stages

    called = []
    monkeypatch.setattr(stages, "run_stage", lambda cfg, checks, body, *args, **kw: called.append(checks))
    cfg = object()
    for name in ("sample", "train", "run", "sweep", "analyze_consistency", "analyze_rollouts", "analyze_collapse"):
        getattr(stages, name)(cfg)
    stages.evaluate(type("Cfg", (), {"run_path": Path("/nonexistent")})(), "base")
    assert len(called) == 8


def test_dead_holder_on_this_host_is_taken_over_at_once(tmp_path, monkeypatch):
    monkeypatch.delenv(run_lease.ENV, raising=False)
    run = tmp_path / "run"
    holder = start_holder(run, timeout_s=600)
    holder.kill()  # SIGKILL: no release, the heartbeat is fresh
    holder.wait(timeout=10)
    assert "process gone" in read_holder(run / ".lease").describe()
    with hold(run) as lease:  # no 600 s wait: the holder's PID is gone on this host
        assert lease.epoch == 2
