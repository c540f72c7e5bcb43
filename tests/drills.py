"""Helpers of the fault drills: attempt records, lost and duplicated rows, and the rows of bench/RESULTS.md's
"Faults survived" table (rendered by ``bench/faults_record.py``).

A drill test calls :func:`record_fault`; with ``UPFT_FAULTS_OUT=FILE`` set the row is merged into that
JSON file (keyed by fault and stage), otherwise nothing is written. Rows lost and duplicated are counted
by the test from the run's own output against its input, never assumed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil

from upft_ray.engine.reaper import RPC_PREFIX
from upft_ray.runtime.scratch import scratch_dirs


def record_fault(fault: str, stage: str, detected_after_s: float | None, resumed_after_s: float | None,
                 rows_lost: int, rows_duplicated: int, **details) -> dict:
    """Return the row and, when ``UPFT_FAULTS_OUT`` names a file, merge it in there."""
    row = {"fault": fault, "stage": stage,
           "detected_after_s": None if detected_after_s is None else round(detected_after_s, 1),
           "resumed_after_s": None if resumed_after_s is None else round(resumed_after_s, 1),
           "rows_lost": int(rows_lost), "rows_duplicated": int(rows_duplicated),
           "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), **details}
    out = os.environ.get("UPFT_FAULTS_OUT")
    if out:
        path = Path(out)
        rows = json.loads(path.read_text()) if path.is_file() else {}
        rows[f"{fault} | {stage}"] = row
        path.write_text(json.dumps(rows, indent=2, sort_keys=True) + "\n")
    print(json.dumps(row))
    return row


def assert_watchdog_ended_hang(detected_after_s: float, stall_timeout_s: float) -> None:
    """Assert a hang (measured from the moment the test stopped the engine) ended by the stall watchdog: not
    before its timeout, less the one decode step by which the engine's last token can precede the stop (the
    watchdog's clock starts at that token), and within its check interval plus slack after it."""
    last_token_lead_s = 2.0  # the bundled 135M model waits under 2 s for a token here (RESULTS.md); tiny ones less
    assert stall_timeout_s - last_token_lead_s <= detected_after_s <= stall_timeout_s + 15, detected_after_s


def survivors(pids, timeout_s: float = 10.0) -> set[int]:
    """Wait up to ``timeout_s`` for the processes ``pids`` to end (gone, or a zombie no one reaped yet: a
    SIGKILL, to a stopped process too, lands a moment after it is sent); return those still alive."""
    deadline = time.time() + timeout_s
    alive = {p for p in pids if _alive(p)}
    while alive and time.time() < deadline:
        time.sleep(0.1)
        alive = {p for p in alive if _alive(p)}
    return alive


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def lost_and_duplicated(written_ids, expected_ids) -> tuple[int, int]:
    """Return (expected ids missing from the output, ids written more than once)."""
    written = pd.Series(list(written_ids), dtype=object)
    counts = written.value_counts()
    return len(set(expected_ids) - set(written)), int((counts - 1).clip(lower=0).sum())


def attempts(stage_dir: Path) -> list[dict]:
    """Return every attempt record of a chunked stage's directory, oldest first."""
    records = []
    for path in (stage_dir / "attempts").glob("*/*.json"):
        try:
            records.append(json.loads(path.read_text()))
        except (FileNotFoundError, json.JSONDecodeError):
            continue  # being rewritten right now
    return sorted(records, key=lambda r: r["started"])


def held_at(records: list[dict], node_id: str, moment: float) -> set[str]:
    """Return the units with an attempt on ``node_id`` in flight at ``moment``: started before it and not
    ended by then (still running, or recorded as died afterwards by the restarted actor)."""
    return {a["key"] for a in records if a["node_id"] == node_id and a["started"] < moment
            and (a["status"] == "running" or a.get("ended", 0.0) > moment)}


def running_units(stage_dir: Path) -> tuple[dict[str, dict], dict[str, set[str]]]:
    """Return (committed units' summaries, per node the units with an attempt still ``running``): a unit in
    both has committed and not yet recorded its attempt's end (an attempt records its end just after its
    commit)."""
    done, running = summaries(stage_dir), {}
    for record in attempts(stage_dir):
        if record["status"] == "running":
            running.setdefault(record["node_id"], set()).add(record["key"])
    return done, running


def summaries(stage_dir: Path) -> dict[str, dict]:
    """Return the committed units' summaries of a chunked stage's directory."""
    out = {}
    for path in (stage_dir / "chunks").glob("chunk-*.json"):
        try:
            out[path.stem] = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            continue
    return out


def gone_pid() -> int:
    """Return the pid of a process that has ended (and been reaped): one no process holds now."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(timeout=60)
    return gone.pid


def engine_socket_dirs(actor_pid: int) -> list[Path]:
    """Return the vLLM socket directories of the engine actor ``actor_pid`` in the temp dir (``use_own_rpc_dir``)."""
    return scratch_dirs(RPC_PREFIX, actor_pid)


def socket_dirs_left(actor_pid: int, timeout_s: float = 15.0) -> list[Path]:
    """Wait up to ``timeout_s`` for the socket directories of the ended actor ``actor_pid`` to be removed (by the
    actor itself before it exits, else by its reaper); return those still there."""
    deadline = time.time() + timeout_s
    while (left := engine_socket_dirs(actor_pid)) and time.time() < deadline:
        time.sleep(0.2)
    return left


def engine_core(actor_pid: int) -> psutil.Process:
    """Return the vLLM engine core process of the engine actor ``actor_pid``."""
    cores = [p for p in psutil.Process(actor_pid).children(recursive=True)
             if "EngineCore" in p.name() or "EngineCore" in " ".join(p.cmdline())]
    assert len(cores) == 1, [(p.pid, p.name(), p.cmdline()) for p in psutil.Process(actor_pid).children(True)]
    return cores[0]


def wait_for_running_attempt(stage_dir, driver, log, deadline_s: float = 400) -> dict:
    """Return the first attempt record running in ``stage_dir`` while ``driver`` runs (its ``log`` on failure)."""
    deadline = time.time() + deadline_s
    while time.time() < deadline and driver.poll() is None:
        running = [a for a in attempts(stage_dir) if a["status"] == "running"]
        if running:
            return running[0]
        time.sleep(0.05)
    raise AssertionError(f"no chunk started:\n{log.read_text()[-3000:]}")


def same_evaluation(plain: Path, faulty: Path, benchmark: str, questions: int) -> tuple[dict, int, int]:
    """Assert the evaluation in ``faulty`` has the uninterrupted one's (``plain``) metrics and graded rows
    (greedy decoding: the same outputs); return (its metrics.json, rows lost, rows duplicated)."""
    a = json.loads((plain / "metrics.json").read_text())
    b = json.loads((faulty / "metrics.json").read_text())
    assert a["benchmarks"] == b["benchmarks"] and a["benchmarks"][benchmark]["graded"] == questions
    cols = ["question_id", "sample_index", "output", "correct"]
    rows_a = pd.read_parquet(plain / f"{benchmark}.parquet")[cols].reset_index(drop=True)
    rows_b = pd.read_parquet(faulty / f"{benchmark}.parquet")[cols].reset_index(drop=True)
    pd.testing.assert_frame_equal(rows_a, rows_b)
    lost, duplicated = lost_and_duplicated(rows_b["question_id"], rows_a["question_id"])
    assert (lost, duplicated) == (0, 0)
    return b, lost, duplicated
