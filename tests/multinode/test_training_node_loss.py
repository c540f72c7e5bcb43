"""Training loses a node: 2 Ray Train workers (DeepSpeed ZeRO-2 on gloo) on two worker nodes of a real
local Ray cluster; after a checkpoint is registered one worker node is SIGKILLed (raylet and every
process of it) and a replacement node joins, as KubeRay replaces a preempted pod. The run resumes from
the last checkpoint and ends with the weights of an uninterrupted run on the same cluster shape.

What it measures is a row of bench/RESULTS.md's "Faults survived" table (tests/drills.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO
from drills import record_fault
from local_cluster import (
    FAST_FAILURE_DETECTION,
    kill_node,
    private_ray_tmpdir,  # noqa: F401 (fixture)
    shutdown,
    start_cluster,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("private_ray_tmpdir")]

EVERY = 3  # checkpoint_every_steps


def upft(stage: str, run: Path, model: Path, address: str, log: Path, extra=()) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "upft_ray.cli", stage, f"run_dir={run}", f"model={model}", f"ray.address={address}",
         "sample.max_questions=120", "sample.max_new_tokens=16", "sample.structure_ratio=0.25",
         "sample.engine.max_model_len=512", "sample.engine.cpus_per_replica=1", "train.num_workers=2",
         "train.micro_batch_size=2", "train.max_length=256", f"train.checkpoint_every_steps={EVERY}",
         "train.max_failures=2", "train.packing=false", "train.zero_stage=2", *extra],
        cwd=REPO, stdout=log.open("w"), stderr=subprocess.STDOUT,
        env={**os.environ, "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"})


def registered_checkpoints(run: Path) -> list:
    try:
        snapshot = run / "train" / "ray" / "upft-train" / "checkpoint_manager_snapshot.json"
        return json.loads(snapshot.read_text())["checkpoint_results"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return []


def weights(run: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run / "train" / "final" / "model.safetensors"))


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def test_training_survives_losing_a_worker_node(tmp_path, tiny_model_dir):
    # Head: no CPU, so the two workers (1 CPU each) are on the two worker nodes, one rank per node.
    cluster, workers = start_cluster(head_cpus=0, workers=[{"num_cpus": 1}] * 2)
    plain, killed = tmp_path / "plain", tmp_path / "killed"
    try:
        sample = upft("sample", plain, tiny_model_dir, cluster.address, tmp_path / "sample.log")
        assert sample.wait(timeout=400) == 0, (tmp_path / "sample.log").read_text()[-3000:]
        import shutil

        shutil.copytree(plain / "sample", killed / "sample")
        first = upft("train", plain, tiny_model_dir, cluster.address, tmp_path / "plain.log")
        assert first.wait(timeout=600) == 0, (tmp_path / "plain.log").read_text()[-3000:]

        run = upft("train", killed, tiny_model_dir, cluster.address, tmp_path / "killed.log")
        deadline = time.time() + 400
        while time.time() < deadline and run.poll() is None and not registered_checkpoints(killed):
            time.sleep(0.05)
        assert run.poll() is None and registered_checkpoints(killed), (tmp_path / "killed.log").read_text()[-3000:]
        killed_at, killed_pids = kill_node(cluster, workers[0])
        steps_before_kill = max(r["step"] for r in lines(killed / "train" / "metrics.jsonl"))
        replacement = cluster.add_node(num_cpus=1, object_store_memory=200 * 1024 * 1024)
        replaced_at = time.time()
        assert run.wait(timeout=600) == 0, (tmp_path / "killed.log").read_text()[-4000:]
        assert replacement.node_id
    finally:
        shutdown(cluster)

    manifest = json.loads((killed / "train" / "manifest.json").read_text())
    steps = manifest["counts"]["steps"]
    resumed_rows, plain_rows = lines(killed / "train" / "metrics.jsonl"), lines(plain / "train" / "metrics.jsonl")
    assert [r["step"] for r in resumed_rows] == list(range(1, steps + 1))  # each step logged once
    resumed = [e for e in lines(killed / "train" / "events.jsonl") if e["event"] == "resumed"]
    assert resumed and resumed[0]["step"] >= EVERY and resumed[0]["step"] % EVERY == 0
    assert resumed_rows[-1]["consumed_examples"] == plain_rows[-1]["consumed_examples"] == steps * 4
    a, b = weights(killed), weights(plain)
    diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert diff <= 1e-5
    figures = {
        "scenario": f"head (0 CPU) + 2 worker nodes (1 CPU); 2 Ray Train workers (tiny model, ZeRO-2, gloo), "
                    f"checkpoint every {EVERY} steps; a worker node SIGKILLed ({len(killed_pids)} processes) after "
                    f"the first registered checkpoint, a replacement node added",
        "failure_detection": FAST_FAILURE_DETECTION,
        "steps_total": steps, "step_reached_at_kill": steps_before_kill, "resumed_from_step": resumed[0]["step"],
        "steps_repeated": steps_before_kill - resumed[0]["step"],
        "resumed_after_kill_s": round(resumed[0]["time"] - killed_at, 2),
        "resumed_after_replacement_joined_s": round(resumed[0]["time"] - replaced_at, 2),
        "max_abs_weight_diff_vs_uninterrupted": diff,
    }
    # Training's rows are examples: none skipped and none consumed twice in the final run's step sequence
    # (the steps after the checkpoint are redone, and their first attempt's rows dropped).
    consumed = [r["consumed_examples"] for r in resumed_rows]
    record_fault("node lost (raylet and all its processes SIGKILLed)", "train", None, figures["resumed_after_kill_s"],
                 plain_rows[-1]["consumed_examples"] - consumed[-1], len(consumed) - len(set(consumed)),
                 **figures)
