"""Distributed evaluation gives the same per-question results as one engine in one process."""

import asyncio
import json

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_overrides

from upft_ray.config import load_config
from upft_ray.engine.generator import VLLMGenerator
from upft_ray.evaluation.finish import engine_rejects, grade_rows
from upft_ray.evaluation.requests import build_eval_requests
from upft_ray.evaluation.stage import run_evaluate


@pytest.mark.slow  # three engine starts: ~1.5 min; the default suite stays under ~15 min
def test_two_actors_match_a_single_process_run(tmp_path, tiny_model_dir, ray_local):
    # Sampled at temperature 1: the per-request seeds make each sample the same whichever replica and
    # batch drew it (a redone chunk reproduces its samples).
    cfg = load_config(None, tiny_overrides(tmp_path / "run", tiny_model_dir) + [
        "eval.max_questions=20", "eval.engine.num_replicas=2", "eval.engine.batch_size=4",
        "eval.engine.dtype=float32", "eval.benchmarks=[bundled:arith-eval]", "eval.decoding=sample",
        "eval.num_samples=2", "eval.temperature=1.0", "eval.top_p=1.0"])
    metrics = run_evaluate(cfg, str(tiny_model_dir), tmp_path / "eval", "tiny")
    distributed = pd.read_parquet(tmp_path / "eval" / "arith-eval.parquet").set_index(["question_id", "sample_index"])
    assert metrics["benchmarks"]["arith-eval"]["graded"] == 40 == len(distributed)
    assert metrics["engine_dtypes"] == ["float32"]  # both replicas ran in the dtype configured

    requests, _, _ = build_eval_requests(cfg)
    batch = {key: np.array([r[key] for r in requests], dtype=object) for key in requests[0]}
    engine = VLLMGenerator(str(tiny_model_dir), cfg.eval.engine, cfg.seed)
    single = grade_rows(pd.DataFrame(asyncio.run(engine(batch)))).set_index(["question_id", "sample_index"])
    engine.close()
    joined = distributed.merge(single, left_index=True, right_index=True, suffixes=("", "_single"))
    assert len(joined) == 40 and joined["output"].nunique() > 20  # sampled: the two samples differ
    assert (joined["output"] == joined["output_single"]).all()
    assert (joined["correct"] == joined["correct_single"]).all()
    assert (joined["num_output_tokens"] == joined["num_output_tokens_single"]).all()


def test_grade_rows_records_each_answers_status():
    from upft_ray.io.schema import EVAL_SCHEMA

    outputs = [("gsm8k", "so \\boxed{18}", "18"), ("gsm8k", "\\boxed{18", "18"), ("gsm8k", "\\boxed{lots}", "18"),
               ("math500", "The answer is 5 + 7 = 12.", "12"), ("gpqa", "The answer is B and C.", "B"),
               ("gpqa", "Answer: (C)", "C")]
    batch = pd.DataFrame({
        "benchmark": [b for b, _, _ in outputs], "question_id": [str(i) for i in range(len(outputs))],
        "sample_index": [0] * len(outputs), "question": ["q"] * len(outputs), "prompt": ["p"] * len(outputs),
        "response_text": [o for _, o, _ in outputs], "answer": [g for _, _, g in outputs],
        "num_response_tokens": [5] * len(outputs), "finish_reason": ["stop"] * len(outputs)})
    graded = grade_rows(batch)
    assert list(graded.columns) == EVAL_SCHEMA.names
    assert graded["correct"].tolist() == [True, False, False, True, False, True]
    assert graded["grade_status"].tolist() == ["ok", "missing", "unparsable", "ok", "unparsable", "ok"]
    assert graded["extracted_answer"].tolist() == ["18", "", "lots", "12", "", "C"]


def test_a_request_that_failed_alone_rejects_its_question_with_the_reason():
    graded = pd.DataFrame({"benchmark": ["b"] * 5, "question_id": ["q1", "q1", "q2", "q3", "q3"],
                           "finish_reason": ["stop", "request_failed: VLLMValidationError: top_p must be in (0, 1]",
                                             "prompt_too_long", "length", "stop"]})
    rejected = engine_rejects(graded, 512)
    assert [(json.loads(r["raw"])["id"], r["reason"]) for r in rejected] == [
        ("q1", "request_failed: VLLMValidationError: top_p must be in (0, 1]"),
        ("q2", "prompt does not fit max_model_len 512")]
