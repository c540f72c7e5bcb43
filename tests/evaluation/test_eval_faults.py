"""An evaluation survives a hung engine and a killed driver, and resumes: a real `upft evaluate` on the tiny
model (greedy, 60 questions in 15 chunks). First an uninterrupted run; then a run whose engine core is
stopped (SIGSTOP) mid-chunk (the stall watchdog replaces the engine) and whose driver is SIGKILLed once
a few chunks are committed; then the same command again. It reuses the committed chunks (counted in the
metrics) and ends with the uninterrupted run's metrics and rows, every question once."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO
from drills import (
    assert_watchdog_ended_hang,
    attempts,
    engine_core,
    record_fault,
    same_evaluation,
    summaries,
    wait_for_running_attempt,
)

pytestmark = pytest.mark.slow  # three evaluations on a local Ray, two engine starts in the middle one

QUESTIONS, PER_CHUNK, STALL_S = 60, 4, 10


def evaluate(run: Path, model: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "upft_ray.cli", "evaluate", "--model", "base", f"run_dir={run}", f"model={model}",
         f"eval.max_questions={QUESTIONS}", "eval.max_new_tokens=24", "eval.engine.max_model_len=512",
         f"eval.engine.batch_size={PER_CHUNK}", "eval.engine.max_batches_in_flight=2", "eval.engine.cpu_kv_cache_gib=1",
         f"eval.engine.stall_timeout_s={STALL_S}", "eval.benchmarks=[bundled:arith-heldout]", "ray.num_cpus=4"],
        cwd=REPO, start_new_session=True, stdout=log.open("w"), stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen, log: Path, timeout: float = 600) -> None:
    try:
        assert proc.wait(timeout=timeout) == 0, log.read_text()[-4000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_evaluation_survives_a_hung_engine_and_a_killed_driver_and_resumes(tmp_path, tiny_model_dir):
    plain, faulty = tmp_path / "plain", tmp_path / "faulty"
    finish(evaluate(plain, tiny_model_dir, tmp_path / "plain.log"), tmp_path / "plain.log")
    eval_dir, log = faulty / "eval_base", tmp_path / "faulty.log"
    driver = evaluate(faulty, tiny_model_dir, log)
    try:
        victim = wait_for_running_attempt(eval_dir, driver, log)
        engine_core(victim["pid"]).send_signal(signal.SIGSTOP)
        stopped_at = time.time()
        deadline = time.time() + 300
        while time.time() < deadline and len([s for s in summaries(eval_dir).values()
                                              if s["finished"] > stopped_at]) < 3:
            time.sleep(0.1)  # the replaced engine commits a few chunks
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and its whole session, no clean-up
        driver.wait(timeout=60)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    committed = len(summaries(eval_dir))
    assert 3 <= committed < QUESTIONS // PER_CHUNK and not (eval_dir / "metrics.json").exists()
    died = [a for a in attempts(eval_dir) if a["status"] == "died"]
    assert died and "hung" in died[0]["why"]
    time.sleep(2)
    rerun_log = tmp_path / "rerun.log"
    rerun_at = time.time()
    rerun = evaluate(faulty, tiny_model_dir, rerun_log)
    finish(rerun, rerun_log)
    # The killed driver's engine actors may commit a chunk they were finishing (they outlive it briefly, and
    # are fenced only once the rerun takes the run over): the rerun reuses whatever was committed.
    reused = int(re.search(r"resuming: (\d+) chunks done", rerun_log.read_text())[1])
    assert committed <= reused < QUESTIONS // PER_CHUNK

    b, lost, duplicated = same_evaluation(plain / "eval_base", eval_dir, "arith-heldout", QUESTIONS)
    assert b["chunks"]["reused"] == reused and b["chunks"]["written"] == QUESTIONS // PER_CHUNK - reused
    detected = died[0]["ended"] - stopped_at
    assert_watchdog_ended_hang(detected, STALL_S)  # the watchdog, not a deadline, ended the hang
    resumed = min(s["finished"] for s in summaries(eval_dir).values() if s["finished"] > stopped_at) - stopped_at
    record_fault("engine core stopped mid-chunk", "evaluate", detected, resumed, lost, duplicated,
                 stall_timeout_s=STALL_S)
    first_after_rerun = min(s["finished"] for s in summaries(eval_dir).values() if s["finished"] > rerun_at)
    record_fault("driver killed, same command rerun", "evaluate", None, first_after_rerun - rerun_at, lost,
                 duplicated, chunks_reused=reused)
