"""Work an engine took with it (``upft_ray.execution.rounds``): a replica that dies and whose restart never
comes up (stand-in engines, tests/engines.py ``LostReplicaEngine``; as a lost node with no room left for its
engine) on a real Ray Data pool. Ray Data would wait for that restart for ever; the driver ends the round:
with spares, once every chunk is committed; without, once nothing has worked for
``engine.lost_work_timeout_s``, and the unfinished chunk runs again on a fresh pool. Nothing is lost or
written twice either way. The watch's rules on their own come first."""

from __future__ import annotations

import os
import time

import pandas as pd
from drills import attempts, lost_and_duplicated
from sampler_scale import write_questions

from upft_ray.config import load_config
from upft_ray.execution.rounds import COMMITTED_GRACE_S, RoundWatch, latest_activity
from upft_ray.io.chunk_store import ChunkStore, new_attempt_id, unit_key
from upft_ray.sampling.pipeline import run_sample

QUESTIONS = 12


def _store(tmp_path) -> ChunkStore:
    store = ChunkStore(tmp_path)
    store.prepare()
    return store


def test_a_round_with_every_chunk_committed_ends_after_the_grace(tmp_path):
    store = _store(tmp_path)
    watch = RoundWatch(store, {0: 1, 1: 1}, timeout_s=600)
    store.commit(unit_key(0), {"whole": True}, None, None, new_attempt_id())
    assert watch.why_stop() == ""  # chunk 1 left, and the round is young
    store.commit(unit_key(1), {"whole": True}, None, None, new_attempt_id())
    now = time.time()
    assert watch.why_stop(now) == ""
    assert watch.why_stop(now + COMMITTED_GRACE_S - 1) == ""
    assert "every chunk is committed" in watch.why_stop(now + COMMITTED_GRACE_S)


def test_unfinished_chunks_end_a_round_only_after_silence_since_its_start(tmp_path):
    store = _store(tmp_path)
    old = store.start_attempt(unit_key(0), "normal", "node", "a")
    os.utime(store.out_dir / "attempts" / "chunk-000000" / f"{old['id']}.json", (1.0, 1.0))  # a round ago
    watch = RoundWatch(store, {0: 1, 1: 1}, timeout_s=60)
    assert watch.why_stop(time.time() + 3600) == ""  # nothing started this round yet: engines may be starting
    record = store.start_attempt(unit_key(1), "normal", "node", "a")
    beat = latest_activity(store.out_dir)
    assert beat >= record["started"] - 1
    assert watch.why_stop(beat + 59) == ""
    why = watch.why_stop(beat + 61)
    assert "2 chunk(s) unfinished" in why and "lost_work_timeout_s: 60" in why
    store.touch_attempt(record)  # a running attempt beats: alive again
    assert watch.why_stop(latest_activity(store.out_dir) + 30) == ""


def test_a_chunk_committed_as_ranges_is_finished(tmp_path):
    store = _store(tmp_path)
    store.commit(unit_key(0, 0, 2), {"whole": False}, None, None, new_attempt_id())
    assert store.unfinished({0: 4, 1: 1}) == [0, 1]
    store.commit(unit_key(0, 2, 4), {"whole": False}, None, None, new_attempt_id())
    assert store.unfinished({0: 4, 1: 1}) == [1]


def _sample_losing_a_replica(tmp_path, drill, speculative: bool):
    drill(lost="(#3)")
    source = tmp_path / "questions.jsonl"
    write_questions(source, QUESTIONS)
    run = tmp_path / "run"
    cfg = load_config(None, [f"run_dir={run}", f"sample.questions={source}", "sample.rows_per_shard=1",
                             "sample.max_new_tokens=8", "sample.engine.backend=engines:LostReplicaEngine",
                             "sample.engine.num_replicas=2", "sample.engine.max_batches_in_flight=1",
                             f"sample.engine.speculative_tail={str(speculative).lower()}",
                             "sample.engine.lost_work_timeout_s=5", "model=smollm2-135m-instruct"])
    started = time.time()
    manifest = run_sample(cfg)
    df = pd.read_parquet(run / "sample" / "shards")
    assert manifest["counts"]["questions_written"] == QUESTIONS
    assert lost_and_duplicated(df["question_id"], [f"s{i:07d}" for i in range(QUESTIONS)]) == (0, 0)
    lost = [a for a in attempts(run / "sample") if a["key"] == unit_key(3)]
    return lost, time.time() - started


def test_a_replica_that_never_comes_back_costs_a_round_not_the_run(tmp_path, ray_local, drill):
    lost, _ = _sample_losing_a_replica(tmp_path, drill, speculative=False)
    # the lost attempt, ended when the round was stopped (its node lives: interrupted, not died), then a
    # fresh pool's attempt that committed it
    assert [a["status"] for a in lost] == ["interrupted", "committed"], lost
    assert not any(a["status"] == "running" for a in attempts(tmp_path / "run" / "sample"))


def test_with_spares_the_round_ends_once_everything_is_committed(tmp_path, ray_local, drill):
    lost, seconds = _sample_losing_a_replica(tmp_path, drill, speculative=True)
    assert sorted((a["kind"], a["status"]) for a in lost) == [("normal", "interrupted"),
                                                              ("speculative", "committed")], lost
    assert seconds < 120  # a wait for the restart would never end
