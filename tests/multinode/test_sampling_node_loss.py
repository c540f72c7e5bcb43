"""Sampling loses a node: a head and three worker nodes of a real local Ray cluster, vLLM engine replicas
on two of them; one engine node is SIGKILLed (raylet and every process of it) part way through `upft
sample`. The run completes with no operator action: Ray restarts the lost engine actor on the spare
node (Ray Data's actor pools restart actors and retry their tasks), the chunks the lost node had
committed are kept as they were, the ones it had started are redone, every question is written once.

What it measures is a row of bench/RESULTS.md's "Faults survived" table (tests/drills.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
from conftest import REPO
from drills import attempts, held_at, lost_and_duplicated, record_fault, summaries
from local_cluster import (
    FAST_FAILURE_DETECTION,
    kill_busy_engine_node,
    private_ray_tmpdir,  # noqa: F401 (fixture)
    shutdown,
    start_cluster,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("private_ray_tmpdir")]

QUESTIONS, ROWS_PER_SHARD, IN_FLIGHT = 300, 2, 4  # enough chunks left at the kill for the restarted engine


def test_sampling_survives_losing_an_engine_node(tmp_path, tiny_model_dir):
    # CPUs decide placement: an engine takes 2 CPUs, so engines fit only on the worker nodes (head: 1);
    # the third worker node is the spare a lost engine is restarted on.
    cluster, workers = start_cluster(head_cpus=1, workers=[{"num_cpus": 2}] * 3)
    run = tmp_path / "run"
    sample_dir = run / "sample"
    log = tmp_path / "driver.log"
    driver = None
    try:
        driver = subprocess.Popen(
            [sys.executable, "-m", "upft_ray.cli", "sample", f"run_dir={run}", f"model={tiny_model_dir}",
             f"ray.address={cluster.address}", f"sample.rows_per_shard={ROWS_PER_SHARD}",
             f"sample.max_questions={QUESTIONS}", "sample.max_new_tokens=16", "sample.engine.max_model_len=512",
             "sample.engine.num_replicas=2", "sample.engine.cpus_per_replica=2", "sample.engine.cpu_kv_cache_gib=1",
             f"sample.engine.max_batches_in_flight={IN_FLIGHT}",
             # Speculative re-issue would redo the lost node's chunks on the survivor once every chunk has
             # started (faster than a restart here: the tiny model finishes in seconds), and the restart on
             # the spare node, what this test is about, would have nothing left to do.
             "sample.engine.speculative_tail=false"],
            cwd=REPO, stdout=log.open("w"), stderr=subprocess.STDOUT)
        # Kill an engine node while it holds work: the one with the most chunks started and not committed
        # (a replica can sit idle for a moment between batches, and a kill then would test nothing).
        try:
            lost, killed_at, held_seen, killed_pids = kill_busy_engine_node(cluster, workers, sample_dir, driver,
                                                                            min_done=6)
        except AssertionError as e:
            raise AssertionError(f"{e}:\n{log.read_text()[-3000:]}") from None
        committed = summaries(sample_dir)  # nothing from the dead node can land after this
        # ... but the other engine goes on committing while the node is being killed and removed
        before = {name for name, s in committed.items() if s["finished"] <= killed_at}
        assert len(committed) < QUESTIONS // ROWS_PER_SHARD, "the run finished before the kill"
        assert driver.wait(timeout=500) == 0, log.read_text()[-4000:]
    finally:
        if driver is not None and driver.poll() is None:
            driver.kill()
        shutdown(cluster)

    final = summaries(sample_dir)
    # Every question once (one sample each), and the manifest balances.
    df = pd.read_parquet(sample_dir / "shards")
    expected = [json.loads(line)["id"] for line in (REPO / "upft_ray/data/arith_train.jsonl").read_text().splitlines()]
    rows_lost, rows_duplicated = lost_and_duplicated(df["question_id"], expected[:QUESTIONS])
    assert (rows_lost, rows_duplicated) == (0, 0) and len(df) == QUESTIONS
    manifest = json.loads((sample_dir / "manifest.json").read_text())
    assert manifest["counts"]["rows_in"] == QUESTIONS == manifest["counts"]["questions_written"]
    assert manifest["shards"]["total"] == len(final) == QUESTIONS // ROWS_PER_SHARD
    assert not list(sample_dir.rglob(".*.tmp-*")) and not list(sample_dir.rglob(".*.pending"))
    # What the lost node committed is kept as it was; nothing lands from it after the kill.
    kept = {name: s for name, s in committed.items() if s["node_id"] == lost}
    assert kept and all(final[name] == s for name, s in kept.items())
    assert all(s["node_id"] != lost for name, s in final.items() if name not in committed)
    # The lost node held uncommitted units at the kill (their attempts never ended, or were recorded as died
    # by the actor restarted elsewhere: the process died with the node); each was redone and committed
    # elsewhere, and no unit committed before the kill ran again.
    records = attempts(sample_dir)
    held = held_at(records, lost, killed_at)
    assert held == held_seen and held, "the kill found no chunk in flight on the lost node"
    early = {key for key in held if f"chunk-{key}" in before}
    assert not early, ("units committed before the kill still had a running attempt on the lost node: "
                       f"{[a for a in records if a['key'] in early]}\n{log.read_text()[-6000:]}")
    redone = {a["key"] for a in records if a["key"] in held and a["node_id"] != lost and a["status"] == "committed"}
    assert redone == held
    assert all(final[f"chunk-{key}"]["node_id"] != lost for key in held)
    assert not [a for a in records if a["started"] > killed_at and f"chunk-{a['key']}" in before]
    spare = {n.node_id for n in workers} - {s['node_id'] for s in committed.values()}  # the engines were on two
    after = [s for s in final.values() if s["finished"] > killed_at]
    on_spare = [s for s in after if s["node_id"] in spare]
    assert on_spare, "the lost engine was not restarted on the spare node"
    figures = {
        "scenario": f"head (1 CPU) + 3 worker nodes (2 CPUs); 2 vLLM replicas (tiny model) on 2 of them; "
                    f"{QUESTIONS} questions in chunks of {ROWS_PER_SHARD}, max_batches_in_flight {IN_FLIGHT}; "
                    f"one engine node SIGKILLed ({len(killed_pids)} processes)",
        "failure_detection": FAST_FAILURE_DETECTION,
        "chunks_total": len(final), "chunks_committed_at_kill": len(committed),
        "chunks_committed_by_lost_node_kept": len(kept), "chunks_held_by_lost_node": len(held),
        "first_commit_after_kill_s": round(min(s["finished"] for s in after) - killed_at, 2),
        "first_commit_by_restarted_replica_s": round(min(s["finished"] for s in on_spare) - killed_at, 2),
        "last_redone_chunk_committed_s": round(max(final[f"chunk-{key}"]["finished"] for key in held)
                                               - killed_at, 2),
        "restarted_engine_init_s": max(s["engine_init_s"] for s in on_spare),
        "run_wall_time_s": manifest["wall_time_s"],
    }
    retried = min(a["started"] for a in records if a["key"] in held and a["node_id"] != lost) - killed_at
    record_fault("node lost (raylet and all its processes SIGKILLed)", "sample", retried,
                 figures["first_commit_after_kill_s"],
                 rows_lost, rows_duplicated, **figures)
