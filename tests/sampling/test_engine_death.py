"""An engine that dies mid-chunk takes its actor down, and the chunk is redone elsewhere: a real `upft
sample` run on a local Ray; once the engine actor has started a chunk, either vLLM's engine core
process (the actor's child: AsyncLLM raises EngineDeadError, the actor exits) or the actor's own process
is SIGKILLed. The run completes by itself, with every question written exactly once."""

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

pytestmark = pytest.mark.slow  # two engine starts on a local Ray: ~3-5 min on 2 cores

QUESTIONS, ROWS_PER_SHARD = 40, 2


def _chunk_starts(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _engine_core(actor_pid: int) -> psutil.Process:
    cores = [p for p in psutil.Process(actor_pid).children(recursive=True)
             if "EngineCore" in p.name() or "EngineCore" in " ".join(p.cmdline())]
    assert len(cores) == 1, [(p.pid, p.name(), p.cmdline()) for p in psutil.Process(actor_pid).children(True)]
    return cores[0]


@pytest.mark.parametrize("victim", ["engine_core", "actor"])
def test_a_killed_engine_mid_chunk_is_redone_and_every_question_written_once(tmp_path, tiny_model_dir, victim):
    run, chunk_log, log = tmp_path / "run", tmp_path / "chunk-starts.jsonl", tmp_path / "driver.log"
    env = {**os.environ, "UPFT_CHUNK_LOG": str(chunk_log)}
    driver = subprocess.Popen(
        [sys.executable, "-m", "upft_ray.cli", "sample", f"run_dir={run}", f"model={tiny_model_dir}",
         f"sample.rows_per_shard={ROWS_PER_SHARD}", f"sample.max_questions={QUESTIONS}", "sample.max_new_tokens=16",
         "sample.engine.max_model_len=512", "sample.engine.cpu_kv_cache_gib=1", "ray.num_cpus=4"],
        cwd=REPO, env=env, start_new_session=True, stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 400
        while not _chunk_starts(chunk_log) and driver.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        assert _chunk_starts(chunk_log), f"no chunk started:\n{log.read_text()[-3000:]}"
        actor_pid = _chunk_starts(chunk_log)[0]["pid"]
        target = _engine_core(actor_pid) if victim == "engine_core" else psutil.Process(actor_pid)
        target.send_signal(signal.SIGKILL)
        killed_at = time.time()
        committed = {p.name for p in (run / "sample" / "chunks").glob("chunk-*.json")}
        started = {s["chunk"] for s in _chunk_starts(chunk_log) if s["started"] < killed_at}
        unfinished = {c for c in started if f"chunk-{c:06d}.json" not in committed}
        assert unfinished, "the kill did not land mid-chunk"
        if victim == "engine_core":  # the actor does not outlive its engine (no hung requests, no spinning)
            psutil.Process(actor_pid).wait(timeout=120)
        assert driver.wait(timeout=600) == 0, log.read_text()[-4000:]
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    starts = _chunk_starts(chunk_log)
    redone = [s for s in starts if s["chunk"] in unfinished and s["pid"] != actor_pid]
    assert {s["chunk"] for s in redone} == unfinished  # every chunk the dead engine held was redone elsewhere
    df = pd.read_parquet(run / "sample" / "shards")
    expected = [json.loads(line)["id"] for line in (REPO / "upft_ray/data/arith_train.jsonl").read_text().splitlines()]
    assert sorted(df["question_id"]) == sorted(expected[:QUESTIONS]) and df["question_id"].is_unique
    manifest = json.loads((run / "sample" / "manifest.json").read_text())
    assert manifest["counts"]["questions_written"] == QUESTIONS and manifest["counts"]["rows_rejected"] == 0
