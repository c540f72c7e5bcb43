"""Evaluation loses a node: vLLM engine replicas on two worker nodes of a real local Ray cluster; one
engine node is SIGKILLed (raylet and every process of it) while `upft evaluate` generates. The run
completes with no operator action (the lost engine actor restarts on the spare node, its batches are
retried) and its metrics and graded rows equal an uninterrupted run's (greedy decoding)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO
from local_cluster import (
    kill_node,
    node_pids,
    private_ray_tmpdir,  # noqa: F401 (fixture)
    shutdown,
    start_cluster,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("private_ray_tmpdir")]


def evaluate(run: Path, model: Path, address: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "upft_ray.cli", "evaluate", "--model", "base", f"run_dir={run}", f"model={model}",
         f"ray.address={address}", "eval.max_questions=100", "eval.max_new_tokens=24", "eval.engine.max_model_len=512",
         "eval.engine.num_replicas=2", "eval.engine.cpus_per_replica=2", "eval.engine.cpu_kv_cache_gib=1",
         "eval.engine.batch_size=4", "eval.engine.max_batches_in_flight=2"],
        cwd=REPO, stdout=log.open("w"), stderr=subprocess.STDOUT)


def engine_nodes(workers) -> list:
    """The worker nodes running a vLLM generator actor (Ray titles its process after the UDF)."""
    import psutil

    found = []
    for node in workers:
        for pid in node_pids(node):
            try:
                if "VLLMGenerator" in " ".join(psutil.Process(pid).cmdline()):
                    found.append(node)
                    break
            except psutil.NoSuchProcess:
                continue
    return found


def test_evaluation_survives_losing_an_engine_node(tmp_path, tiny_model_dir):
    cluster, workers = start_cluster(head_cpus=1, workers=[{"num_cpus": 2}] * 3)
    plain, killed = tmp_path / "plain", tmp_path / "killed"
    try:
        started = time.time()
        first = evaluate(plain, tiny_model_dir, cluster.address, tmp_path / "plain.log")
        assert first.wait(timeout=500) == 0, (tmp_path / "plain.log").read_text()[-3000:]
        plain_s = time.time() - started
        started = time.time()
        second = evaluate(killed, tiny_model_dir, cluster.address, tmp_path / "killed.log")
        deadline = time.time() + 300
        nodes = []
        while time.time() < deadline and second.poll() is None and len(nodes) < 2:
            nodes = engine_nodes(workers)
            time.sleep(0.5)
        assert second.poll() is None and len(nodes) == 2, (tmp_path / "killed.log").read_text()[-3000:]
        log = tmp_path / "killed.log"
        time.sleep(max(0.0, started + 0.75 * plain_s - time.time()))  # generating, by the first run's pace
        assert second.poll() is None, "the evaluation finished before the kill"
        kill_node(cluster, nodes[0])
        assert second.wait(timeout=500) == 0, log.read_text()[-4000:]
    finally:
        shutdown(cluster)

    a = json.loads((plain / "eval_base" / "metrics.json").read_text())["benchmarks"]
    b = json.loads((killed / "eval_base" / "metrics.json").read_text())["benchmarks"]
    (name,) = a
    assert a == b and a[name]["graded"] == 100
    cols = ["question_id", "sample_index", "output", "correct"]
    rows_a = pd.read_parquet(plain / "eval_base" / f"{name}.parquet")[cols]
    rows_b = pd.read_parquet(killed / "eval_base" / f"{name}.parquet")[cols]
    pd.testing.assert_frame_equal(rows_a.reset_index(drop=True), rows_b.reset_index(drop=True))
