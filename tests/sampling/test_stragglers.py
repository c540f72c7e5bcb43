"""Stragglers at 99%: one slow replica among two (stand-in engines, tests/engines.py: the first to start
takes 15 s per chunk, the other 0.05 s), on a real Ray Data pool. Without speculative re-issue the run waits
for the slow replica's last chunks; with it, the idle replica re-runs them and the first commit wins.
The tail (from 95% to 100% of chunks committed) is compared in one test run; no question is written
twice either way."""

from __future__ import annotations

import math

import pandas as pd
from drills import attempts, lost_and_duplicated, record_fault, summaries
from sampler_scale import write_questions

from upft_ray.config import load_config
from upft_ray.sampling.pipeline import run_sample

CHUNKS, SLOW_S = 40, 15.0  # slow enough that the fast replica finishes every other chunk first


def sample_with_a_straggler(tmp_path, drill_dir, speculative: bool):
    """Return (tail seconds, sample dir) of a run over CHUNKS one-question chunks."""
    (drill_dir / "slow.claim").unlink(missing_ok=True)  # a new pool: its first replica is the slow one
    source = tmp_path / "questions.jsonl"
    write_questions(source, CHUNKS)
    run = tmp_path / f"run-{'speculative' if speculative else 'plain'}"
    cfg = load_config(None, [f"run_dir={run}", f"sample.questions={source}", "sample.rows_per_shard=1",
                             "sample.max_new_tokens=8", "sample.engine.backend=engines:SlowReplicaEngine",
                             "sample.engine.num_replicas=2", "sample.engine.max_batches_in_flight=2",
                             f"sample.engine.speculative_tail={str(speculative).lower()}",
                             "model=smollm2-135m-instruct"])
    manifest = run_sample(cfg)
    assert manifest["counts"]["questions_written"] == CHUNKS
    finished = sorted(s["finished"] for s in summaries(run / "sample").values())
    return finished[-1] - finished[math.ceil(0.95 * CHUNKS) - 1], run / "sample", finished


def test_speculative_reissue_shrinks_the_tail_and_writes_nothing_twice(tmp_path, ray_local, drill):
    drill_dir = drill(slow_s=SLOW_S, fast_s=0.05)
    plain_tail, _, _ = sample_with_a_straggler(tmp_path, drill_dir, speculative=False)
    tail, sample_dir, finished = sample_with_a_straggler(tmp_path, drill_dir, speculative=True)
    assert plain_tail >= SLOW_S / 3, f"no straggler at the end of the plain run (tail {plain_tail:.2f} s)"
    assert tail < plain_tail / 2, (tail, plain_tail)
    records = attempts(sample_dir)
    duplicates = [a for a in records if a["kind"] == "speculative"]
    assert duplicates and any(a["status"] == "committed" for a in duplicates)  # a duplicate won
    assert any(a["status"] in ("cancelled", "lost") for a in records)  # and the slow attempt lost
    df = pd.read_parquet(sample_dir / "shards")
    lost, duplicated = lost_and_duplicated(df["question_id"], [f"s{i:07d}" for i in range(CHUNKS)])
    assert (lost, duplicated) == (0, 0)
    at_95 = finished[math.ceil(0.95 * CHUNKS) - 1]
    first_spare = min(a["started"] for a in duplicates)
    record_fault(f"one slow replica ({SLOW_S:g} s per chunk, others 0.05 s)", "sample",
                 max(0.0, first_spare - at_95), tail, lost, duplicated,
                 tail_95_to_100_s={"with_speculation": round(tail, 2), "without": round(plain_tail, 2)})
