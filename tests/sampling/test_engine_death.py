"""An engine that dies or hangs mid-chunk is replaced and its chunks redone: a real `upft sample` run on a
local Ray. Once the engine actor has started a chunk, its vLLM engine core (the actor's child) is either
SIGKILLed (AsyncLLM reports it dead, the actor exits) or SIGSTOPped (a hang: no error, no token; the
actor's stall watchdog exits it after ``engine.stall_timeout_s``). Either way the run completes by
itself, every question written exactly once, and the attempt records say what happened."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import psutil
import pytest
from conftest import REPO
from drills import (
    assert_watchdog_ended_hang,
    attempts,
    engine_core,
    lost_and_duplicated,
    record_fault,
    socket_dirs_left,
    summaries,
    survivors,
    wait_for_running_attempt,
)

pytestmark = pytest.mark.slow  # two engine starts per case on a local Ray: ~2-4 min each on 2 cores

QUESTIONS, ROWS_PER_SHARD, STALL_S = 40, 2, 10


@pytest.mark.parametrize("fault", ["engine core killed", "engine core stopped"])
def test_a_dead_or_hung_engine_mid_chunk_is_replaced_and_every_question_written_once(tmp_path, tiny_model_dir,
                                                                                     fault):
    run, log = tmp_path / "run", tmp_path / "driver.log"
    sample_dir = run / "sample"
    driver = subprocess.Popen(
        [sys.executable, "-m", "upft_ray.cli", "sample", f"run_dir={run}", f"model={tiny_model_dir}",
         f"sample.rows_per_shard={ROWS_PER_SHARD}", f"sample.max_questions={QUESTIONS}", "sample.max_new_tokens=16",
         "sample.engine.max_model_len=512", "sample.engine.cpu_kv_cache_gib=1", f"sample.engine.stall_timeout_s={STALL_S}",
         "ray.num_cpus=4"], cwd=REPO, start_new_session=True, stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        victim = wait_for_running_attempt(sample_dir, driver, log)
        core = engine_core(victim["pid"])
        core.send_signal(signal.SIGKILL if fault.endswith("killed") else signal.SIGSTOP)
        hit_at = time.time()
        hit = {a["key"] for a in attempts(sample_dir) if a["status"] == "running" and a["pid"] == victim["pid"]}
        assert hit - set(summaries(sample_dir)), "the fault did not land mid-chunk"
        psutil.Process(victim["pid"]).wait(timeout=120 + STALL_S)  # the actor does not outlive its engine
        assert not survivors({core.pid})  # nor a stopped core its actor
        assert not socket_dirs_left(victim["pid"])  # nor vLLM's socket files (removed before the actor's os._exit)
        assert driver.wait(timeout=600) == 0, log.read_text()[-4000:]
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    records = attempts(sample_dir)
    died = [a for a in records if a["pid"] == victim["pid"] and a["status"] == "died"]
    assert died and {a["key"] for a in died} >= hit  # every attempt it held recorded its death, with why
    why = died[0]["why"]
    assert ("hung" in why and f"stall_timeout_s {STALL_S}" in why) if fault.endswith("stopped") else "engine" in why.lower()
    redone = {a["key"] for a in records if a["key"] in hit and a["pid"] != victim["pid"] and a["status"] == "committed"}
    assert redone == hit  # every chunk the engine held was redone elsewhere
    df = pd.read_parquet(sample_dir / "shards")
    expected = [json.loads(line)["id"] for line in (REPO / "upft_ray/data/arith_train.jsonl").read_text().splitlines()]
    lost, duplicated = lost_and_duplicated(df["question_id"], expected[:QUESTIONS])
    assert (lost, duplicated) == (0, 0) and len(df) == QUESTIONS
    manifest = json.loads((sample_dir / "manifest.json").read_text())
    assert manifest["counts"]["questions_written"] == QUESTIONS and manifest["counts"]["rows_rejected"] == 0
    detected = min(a["ended"] for a in died) - hit_at
    if fault.endswith("stopped"):
        assert_watchdog_ended_hang(detected, STALL_S)  # the watchdog, not a deadline, ended the hang
    resumed = min(s["finished"] for s in summaries(sample_dir).values() if s["finished"] > hit_at) - hit_at
    record_fault(fault + " mid-chunk", "sample", detected, resumed, lost, duplicated,
                 stall_timeout_s=STALL_S if fault.endswith("stopped") else None)
