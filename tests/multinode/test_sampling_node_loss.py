"""Sampling loses a node: a head and three worker nodes of a real local Ray cluster, vLLM engine replicas
on two of them; one engine node is SIGKILLed (raylet and every process of it) part way through `upft
sample`. The run completes with no operator action: Ray restarts the lost engine actor on the spare
node (Ray Data's actor pools restart actors and retry their tasks), the chunks the lost node had
committed are kept as they were, the ones it had started are redone, every question is written once.

With UPFT_NODE_LOSS_OUT=FILE the measurements (seconds from node loss to progress resuming, chunks
redone) are written there as JSON (bench/RESULTS.md, "Losing a node")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO
from local_cluster import (
    FAST_FAILURE_DETECTION,
    kill_node,
    private_ray_tmpdir,  # noqa: F401 (fixture)
    shutdown,
    start_cluster,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("private_ray_tmpdir")]

QUESTIONS, ROWS_PER_SHARD, IN_FLIGHT = 300, 2, 4  # enough chunks left at the kill for the restarted engine


def summaries(sample_dir: Path) -> dict[str, dict]:
    out = {}
    for p in (sample_dir / "chunks").glob("chunk-*.json"):
        try:
            out[p.name] = json.loads(p.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            pass  # renamed into place only when complete, so this is a race with the listing
    return out


def in_flight(chunk_log: Path, sample_dir: Path) -> dict[str, set[int]]:
    """Return, per node, the chunks its engine has started and not committed, now."""
    # The log first: a chunk's start is logged before its commit, so one committed in between is not
    # taken for work in flight.
    lines = chunk_log.read_text().splitlines() if chunk_log.is_file() else []
    committed = {s["chunk"] for s in summaries(sample_dir).values()}
    out: dict[str, set[int]] = {}
    for line in lines:
        try:
            start = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line being appended as we read
        if start["chunk"] not in committed:
            out.setdefault(start["node_id"], set()).add(start["chunk"])
    return out


def test_sampling_survives_losing_an_engine_node(tmp_path, tiny_model_dir, monkeypatch):
    chunk_log = tmp_path / "chunk-starts.jsonl"
    monkeypatch.setenv("UPFT_CHUNK_LOG", str(chunk_log))  # the nodes' processes inherit it
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
             f"sample.engine.max_batches_in_flight={IN_FLIGHT}"],
            cwd=REPO, stdout=log.open("w"), stderr=subprocess.STDOUT)
        by_id = {n.node_id: n for n in workers}
        # Kill an engine node while it holds work: the one with the most chunks started and not committed
        # (a replica can sit idle for a moment between batches, and a kill then would test nothing).
        deadline, engine_nodes, busy = time.time() + 400, set(), {}
        while time.time() < deadline and driver.poll() is None:
            done = summaries(sample_dir)
            engine_nodes = {s["node_id"] for s in done.values()}
            if len(engine_nodes) == 2 and len(done) >= 6:
                busy = {node: chunks for node, chunks in in_flight(chunk_log, sample_dir).items()
                        if node in engine_nodes}
                if busy:
                    break
            time.sleep(0.05)
        assert driver.poll() is None and len(engine_nodes) == 2 and busy, \
            f"no engine node held work while both engines were committing:\n{log.read_text()[-3000:]}"
        victim = by_id[max(sorted(busy), key=lambda node: len(busy[node]))]
        killed_at, killed_pids = kill_node(cluster, victim)
        committed = summaries(sample_dir)  # nothing from the dead node can land after this
        assert len(committed) < QUESTIONS // ROWS_PER_SHARD, "the run finished before the kill"
        assert driver.wait(timeout=500) == 0, log.read_text()[-4000:]
    finally:
        if driver is not None and driver.poll() is None:
            driver.kill()
        shutdown(cluster)

    final = summaries(sample_dir)
    lost = victim.node_id
    # Every question once (one sample each), and the manifest balances.
    df = pd.read_parquet(sample_dir / "shards")
    expected = [json.loads(line)["id"] for line in (REPO / "upft_ray/data/arith_train.jsonl").read_text().splitlines()]
    assert sorted(df.question_id) == sorted(expected[:QUESTIONS]) and df.question_id.is_unique
    manifest = json.loads((sample_dir / "manifest.json").read_text())
    assert manifest["counts"]["rows_in"] == QUESTIONS == manifest["counts"]["questions_written"]
    assert manifest["shards"]["total"] == len(final) == QUESTIONS // ROWS_PER_SHARD
    assert not list(sample_dir.rglob(".*.tmp-*"))
    # What the lost node committed is kept as it was; nothing lands from it after the kill.
    kept = {name: s for name, s in committed.items() if s["node_id"] == lost}
    assert kept and all(final[name] == s for name, s in kept.items())
    assert all(s["node_id"] != lost for name, s in final.items() if name not in committed)
    # What it had started and not committed was redone elsewhere; nothing committed was redone.
    starts = [json.loads(line) for line in chunk_log.read_text().splitlines()]
    started_on_lost = {r["chunk"] for r in starts if r["node_id"] == lost and r["started"] < killed_at}
    committed_chunks = {s["chunk"] for s in committed.values()}
    redone = sorted(started_on_lost - committed_chunks)
    assert redone, "the kill found no chunk in flight on the lost node"
    assert len(redone) <= IN_FLIGHT  # at most the batches one replica holds at once
    assert all(final[f"chunk-{c:06d}.json"]["node_id"] != lost for c in redone)
    runs_per_chunk = pd.Series([r["chunk"] for r in starts]).value_counts()
    assert set(runs_per_chunk[runs_per_chunk > 1].index) <= set(redone)  # no committed chunk ran twice
    spare = {n.node_id for n in workers} - engine_nodes
    after = [s for s in final.values() if s["finished"] > killed_at]
    on_spare = [s for s in after if s["node_id"] in spare]
    assert on_spare, "the lost engine was not restarted on the spare node"
    figures = {
        "scenario": f"head (1 CPU) + 3 worker nodes (2 CPUs); 2 vLLM replicas (tiny model) on 2 of them; "
                    f"{QUESTIONS} questions in chunks of {ROWS_PER_SHARD}, max_batches_in_flight {IN_FLIGHT}; "
                    f"one engine node SIGKILLed ({len(killed_pids)} processes)",
        "failure_detection": FAST_FAILURE_DETECTION,
        "chunks_total": len(final), "chunks_committed_at_kill": len(committed),
        "chunks_committed_by_lost_node_kept": len(kept), "chunks_redone": len(redone),
        "first_commit_after_kill_s": round(min(s["finished"] for s in after) - killed_at, 2),
        "first_commit_by_restarted_replica_s": round(min(s["finished"] for s in on_spare) - killed_at, 2),
        "last_redone_chunk_committed_s": round(max(final[f"chunk-{c:06d}.json"]["finished"] for c in redone)
                                               - killed_at, 2),
        "restarted_engine_init_s": max(s["engine_init_s"] for s in on_spare),
        "run_wall_time_s": manifest["wall_time_s"],
    }
    print(json.dumps(figures, indent=2))
    if os.environ.get("UPFT_NODE_LOSS_OUT"):
        out = Path(os.environ["UPFT_NODE_LOSS_OUT"])
        previous = json.loads(out.read_text()) if out.is_file() else {}
        out.write_text(json.dumps({**previous, "sampling": figures}, indent=2) + "\n")
