"""Exactly-once sampling: a run killed with SIGKILL part way, rerun with the same command, ends with
every question once, and the rerun leaves the shards that were complete untouched."""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from conftest import REPO
from drills import attempts


def _sample_command(run_dir, model_dir):
    return [sys.executable, "-m", "upft_ray.cli", "sample", f"run_dir={run_dir}", f"model={model_dir}",
            "sample.rows_per_shard=2", "sample.max_questions=200", "sample.max_new_tokens=16",
            "sample.engine.max_model_len=512", "ray.num_cpus=4"]


def _finished_shards(sample_dir):
    """(inode, mtime) of the shard of every chunk whose summary (commit mark) is written."""
    done = [p.stem.split("-")[1] for p in (sample_dir / "chunks").glob("chunk-*.json")]
    shards = [sample_dir / "shards" / f"shard-{index}.parquet" for index in done]
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in shards if p.exists()}


@pytest.mark.slow  # minutes of engine or trainer starts; the default suite stays under ~25 min
def test_killed_run_resumes_exactly_once(tmp_path, tiny_model_dir):
    run = tmp_path / "run"
    sample_dir, shards = run / "sample", run / "sample" / "shards"
    env = {**os.environ, "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}
    log = tmp_path / "first-run.log"  # read back only to explain a failure
    first = subprocess.Popen(_sample_command(run, tiny_model_dir), cwd=REPO, env=env, start_new_session=True,
                             stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while len(_finished_shards(sample_dir)) < 3 and first.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)  # the driver and every process of its session, no clean-up
    first.wait(timeout=60)
    time.sleep(2)  # Ray's processes share the driver's fate; let them go before counting
    before = _finished_shards(sample_dir)
    assert 3 <= len(before) < 100, (f"kill did not land part way: {len(before)} of 100 shards (first run "
                                    f"exit {first.returncode}):\n{log.read_text()[-3000:]}")
    assert not (run / "sample" / "manifest.json").exists()

    rerun = subprocess.run(_sample_command(run, tiny_model_dir), cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"resuming: {len(before)} shards done, {100 - len(before)} to write" in rerun.stderr
    assert f"tokens generated ({len(before)} of 100 shards from an earlier run);" in rerun.stderr

    after = _finished_shards(sample_dir)
    assert len(after) == 100
    assert {name: after[name] for name in before} == before  # complete shards were not rewritten
    df = pd.read_parquet(shards)
    expected = [json.loads(line)["id"] for line in (REPO / "upft_ray/data/arith_train.jsonl").read_text().splitlines()]
    assert sorted(df.question_id) == sorted(expected[:200]) and df.question_id.is_unique
    manifest = json.loads((run / "sample" / "manifest.json").read_text())
    assert manifest["shards"] == {"total": 100, "reused": len(before), "written": 100 - len(before),
                                  "units": 100, "rows_per_shard": 2}
    # Every attempt ended on record and each chunk was committed by exactly one. The chunks the kill caught in
    # flight were either redone whole (interrupted, or died when an engine core went before its actor) or
    # finished by the killed run's actors, which outlive their driver briefly, before the rerun began.
    records = attempts(sample_dir)
    assert not [a for a in records if a["status"] == "running"]
    committed = [a["key"] for a in records if a["status"] == "committed"]
    assert len(committed) == len(set(committed)) == 100
    assert sum(a["status"] in ("interrupted", "died") for a in records) == (manifest["faults"]["interrupted"]
                                                                         + manifest["faults"]["died"])
    assert manifest["counts"]["rows_in"] == 200 == manifest["counts"]["questions_written"]
    assert not list((run / "sample").rglob(".*.tmp-*")) and not list((run / "sample").rglob("*.pending"))
    assert [p.name for p in (run / ".staging").iterdir()] == []  # the killed attempt's staging area is gone
