"""Evaluation loses a node: vLLM engine replicas on two worker nodes of a real local Ray cluster; one
engine node is SIGKILLed (raylet and every process of it) while it holds chunks it has not committed.
The run completes with no operator action (the lost engine actor restarts on the spare node, the chunks
it held are redone there or on the other engine), and its metrics and graded rows equal an
uninterrupted run's (greedy decoding). The attempt records show what the lost node held."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO
from drills import attempts, held_at, record_fault, same_evaluation, summaries
from local_cluster import (
    kill_busy_engine_node,
    private_ray_tmpdir,  # noqa: F401 (fixture)
    shutdown,
    start_cluster,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("private_ray_tmpdir")]

QUESTIONS, PER_CHUNK = 100, 2


def evaluate(run: Path, model: Path, address: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "upft_ray.cli", "evaluate", "--model", "base", f"run_dir={run}", f"model={model}",
         f"ray.address={address}", f"eval.max_questions={QUESTIONS}", "eval.max_new_tokens=24",
         "eval.engine.max_model_len=512", "eval.engine.num_replicas=2", "eval.engine.cpus_per_replica=2",
         "eval.engine.cpu_kv_cache_gib=1", f"eval.engine.batch_size={PER_CHUNK}", "eval.engine.max_batches_in_flight=2",
         "eval.benchmarks=[bundled:arith-heldout]",
         # if neither a spare nor the restarted actor redoes the lost node's chunks (seen once, cause unknown),
         # the driver runs them again on a fresh pool after this long, inside the wait below
         "eval.engine.lost_work_timeout_s=120"],
        cwd=REPO, start_new_session=True, stdout=log.open("w"), stderr=subprocess.STDOUT)


def test_evaluation_survives_losing_an_engine_node(tmp_path, tiny_model_dir):
    cluster, workers = start_cluster(head_cpus=1, workers=[{"num_cpus": 2}] * 3)
    plain, faulty = tmp_path / "plain", tmp_path / "killed"
    eval_dir, log = faulty / "eval_base", tmp_path / "killed.log"
    driver = None
    try:
        first = evaluate(plain, tiny_model_dir, cluster.address, tmp_path / "plain.log")
        assert first.wait(timeout=500) == 0, (tmp_path / "plain.log").read_text()[-3000:]
        driver = evaluate(faulty, tiny_model_dir, cluster.address, log)
        try:
            lost, killed_at, held_seen, _ = kill_busy_engine_node(cluster, workers, eval_dir, driver, min_done=4)
        except AssertionError as e:
            raise AssertionError(f"{e}:\n{log.read_text()[-3000:]}") from None
        committed = summaries(eval_dir)  # nothing from the dead node can land after this
        # ... but the other engine goes on committing while the node is being killed and removed
        before = {name for name, s in committed.items() if s["finished"] <= killed_at}
        assert len(committed) < QUESTIONS // PER_CHUNK, "the evaluation finished before the kill"
        assert driver.wait(timeout=500) == 0, log.read_text()[-4000:]
    finally:
        if driver is not None and driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        shutdown(cluster)

    b, rows_lost, rows_duplicated = same_evaluation(plain / "eval_base", eval_dir, "arith-heldout", QUESTIONS)
    # The lost node held chunks it had not committed: their attempts never ended, or were recorded as died by
    # the actor restarted elsewhere (the process died with the node), and each was redone and committed on
    # another node; what it had committed was kept.
    records = attempts(eval_dir)
    held = held_at(records, lost, killed_at)
    assert held == held_seen and not {f"chunk-{k}" for k in held} & before
    final = summaries(eval_dir)
    assert all(final[f"chunk-{k}"]["node_id"] != lost for k in held)
    assert all(final[name] == s for name, s in committed.items())
    assert b["faults"]["died"] >= len(held)
    retried = min(r["started"] for r in records if r["key"] in held and r["node_id"] != lost) - killed_at
    resumed = min(s["finished"] for s in final.values() if s["finished"] > killed_at) - killed_at
    record_fault("node lost (raylet and all its processes SIGKILLed)", "evaluate", retried, resumed,
                 rows_lost, rows_duplicated, units_redone=len(held))
