"""A question that kills every engine it meets is isolated and quarantined, not fatal: a real Ray Data pool
of stand-in engines (tests/engines.py) whose actor process dies on one question id. The chunk holding
it is split until that question stands alone; it becomes a rejected row with reason ``engine_crash``,
every other question is written once, and the counts balance. The same for an evaluation."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from drills import lost_and_duplicated, record_fault
from sampler_scale import write_questions

from upft_ray.config import load_config
from upft_ray.evaluation.stage import run_evaluate
from upft_ray.sampling.pipeline import run_sample

pytestmark = pytest.mark.timeout(600)
QUESTIONS, PER_CHUNK = 12, 4  # question s0000005 is record 1 of chunk 1


@pytest.fixture
def poison_env(drill):
    return drill(poison="(#5)") / "deaths.log"


def _cfg(tmp_path, source, *extra):
    return load_config(None, [f"run_dir={tmp_path / 'run'}", f"sample.questions={source}",
                              f"sample.rows_per_shard={PER_CHUNK}", "sample.max_new_tokens=8",
                              "sample.engine.backend=engines:PoisonEngine", "sample.engine.max_batches_in_flight=1",
                              "eval.engine.backend=engines:PoisonEngine", f"eval.engine.batch_size={PER_CHUNK}",
                              "eval.engine.max_batches_in_flight=1", "model=smollm2-135m-instruct", *extra])


def test_a_question_that_kills_every_engine_is_quarantined_and_the_rest_written(tmp_path, ray_local, poison_env):
    source = tmp_path / "questions.jsonl"
    write_questions(source, QUESTIONS)
    manifest = run_sample(_cfg(tmp_path, source))
    rejected = pd.read_parquet(tmp_path / "run" / "sample" / "rejected.parquet")
    assert len(rejected) == 1 and rejected["line"].tolist() == [6]  # line 6 of the file: question (#5)
    assert rejected["reason"].iloc[0].startswith("engine_crash: "), rejected["reason"].iloc[0]
    shards = pd.read_parquet(tmp_path / "run" / "sample" / "shards")
    assert sorted(shards["question_id"]) == [f"s{i:07d}" for i in range(QUESTIONS) if i != 5]
    counts = manifest["counts"]
    assert counts["rows_in"] == QUESTIONS == counts["questions_written"] + counts["rows_rejected"]
    assert counts["rejected_by_reason"] == {"engine_crash": 1}
    deaths = poison_env.read_text().split("\n")
    assert 5 <= len([d for d in deaths if d]) <= 8  # 2 whole, 1 half, 2 alone (+ co-tenants at most)
    assert manifest["faults"]["died"] >= 5
    lost, duplicated = lost_and_duplicated(shards["question_id"], [f"s{i:07d}" for i in range(QUESTIONS) if i != 5])
    record_fault("one question kills every engine it meets", "sample", None, None, lost, duplicated,
                 engine_deaths=len([d for d in deaths if d]), quarantined=len(rejected))


def test_an_evaluation_quarantines_the_question_too(tmp_path, ray_local, poison_env):
    source = tmp_path / "eval.jsonl"
    write_questions(source, QUESTIONS)
    cfg = _cfg(tmp_path, source, f"eval.benchmarks=[{source}]")
    metrics = run_evaluate(cfg, "stand-in", tmp_path / "eval", "poison")
    (name,) = metrics["benchmarks"]
    m = metrics["benchmarks"][name]
    assert (m["rows_read"], m["questions"], m["rows_rejected"]) == (QUESTIONS, QUESTIONS - 1, 1)
    rejected = pd.read_parquet(tmp_path / "eval" / "rejected.parquet")
    assert [json.loads(r)["id"] for r in rejected["raw"]] == ["s0000005"]
    assert rejected["reason"].iloc[0].startswith("engine_crash: ")
    graded = pd.read_parquet(tmp_path / "eval" / f"{name}.parquet")
    assert graded["question_id"].is_unique and len(graded) == QUESTIONS - 1
    lost, duplicated = lost_and_duplicated(graded["question_id"], [f"s{i:07d}" for i in range(QUESTIONS) if i != 5])
    record_fault("one question kills every engine it meets", "evaluate", None, None, lost, duplicated,
                 engine_deaths=metrics["faults"]["died"], quarantined=len(rejected))
