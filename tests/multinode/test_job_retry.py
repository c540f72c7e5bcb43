"""The job is retried on a new cluster: `jobs/upft_pipeline.py --stage run` on a real local Ray cluster
is killed with the whole cluster (every process of its head, and the driver) once training has
registered a checkpoint; the same command against a fresh cluster and the same run directory
finishes every stage, redoing nothing that was committed (the manifests count it)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, tiny_overrides
from drills import lost_and_duplicated, record_fault
from local_cluster import (
    kill_node,
    private_ray_tmpdir,  # noqa: F401 (fixture)
    shutdown,
    start_cluster,
)

from upft_ray.training.metrics import read_events

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("private_ray_tmpdir")]


def job(run: Path, model: Path, address: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "jobs/upft_pipeline.py", "--config", "configs/quickstart.yaml", "--stage", "run",
         *tiny_overrides(run, model), "sample.max_questions=120", "train.packing=false", f"ray.address={address}"],
        cwd=REPO, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"})


def test_job_retried_on_a_new_cluster_resumes_every_stage(tmp_path, tiny_model_dir):
    run = tmp_path / "run"
    first_log, retry_log = tmp_path / "first.log", tmp_path / "retry.log"
    snapshot = run / "train" / "ray" / "upft-train" / "checkpoint_manager_snapshot.json"
    cluster, _ = start_cluster(head_cpus=4, workers=[])
    try:
        first = job(run, tiny_model_dir, cluster.address, first_log)
        deadline = time.time() + 500
        while time.time() < deadline and first.poll() is None and not snapshot.is_file():
            time.sleep(0.05)
        assert first.poll() is None and snapshot.is_file(), first_log.read_text()[-3000:]
        os.killpg(first.pid, signal.SIGKILL)  # the job's driver
        kill_node(cluster, cluster.head_node)  # and its whole cluster
        first.wait(timeout=60)
    finally:
        shutdown(cluster)
    examples_done = run / "train" / "examples" / "_done.json"
    examples_mtime = examples_done.stat().st_mtime_ns
    shards = {p.name: p.stat().st_mtime_ns for p in (run / "sample" / "shards").glob("*.parquet")}
    assert not (run / "train" / "manifest.json").exists()

    fresh, _ = start_cluster(head_cpus=4, workers=[])
    try:
        retried_at = time.time()
        retry = job(run, tiny_model_dir, fresh.address, retry_log)
        assert retry.wait(timeout=600) == 0, retry_log.read_text()[-4000:]
    finally:
        shutdown(fresh)

    sample = json.loads((run / "sample" / "manifest.json").read_text())
    assert sample["shards"]["written"] == 0 and sample["shards"]["reused"] == sample["shards"]["total"]
    assert {p.name: p.stat().st_mtime_ns for p in (run / "sample" / "shards").glob("*.parquet")} == shards
    assert examples_done.stat().st_mtime_ns == examples_mtime  # not tokenised again
    train = json.loads((run / "train" / "manifest.json").read_text())
    assert train["resumed_at_steps"] and train["resumed_at_steps"][0] >= 3
    steps = [json.loads(line)["step"] for line in (run / "train" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, train["counts"]["steps"] + 1))
    for name in ("eval", "eval_base"):
        assert json.loads((run / name / "metrics.json").read_text())["benchmarks"]
    assert (run / "report.md").is_file()
    assert "process gone" in retry_log.read_text()  # the dead attempt's lease was taken over at once
    written = pd.read_parquet(run / "sample" / "shards")["question_id"]
    expected = [json.loads(line)["id"] for line in (REPO / "upft_ray/data/arith_train.jsonl").read_text().splitlines()]
    rows_lost, rows_duplicated = lost_and_duplicated(written, expected[:120])
    assert (rows_lost, rows_duplicated) == (0, 0)
    resumed = [e["time"] for e in read_events(run / "train" / "events.jsonl", "resumed") if e["time"] > retried_at]
    record_fault("job driver and its whole cluster SIGKILLed, job resubmitted", "run", None,
                 resumed[0] - retried_at, rows_lost, rows_duplicated, resumed_at_step=train["resumed_at_steps"][0])
