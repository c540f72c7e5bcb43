"""Grading never raises: a real evaluation (Ray Data pool, stand-in engines from tests/engines.py) whose
grader raises on some answers, a different exception class each. The evaluation completes; those rows
are graded ``error`` with the exception's class, the metrics count them, every other row is graded as
usual, and no question is lost or written twice."""

from __future__ import annotations

import pandas as pd
import pytest
from drills import lost_and_duplicated, record_fault
from sampler_scale import write_questions

from upft_ray.config import load_config
from upft_ray.evaluation.stage import run_evaluate

pytestmark = pytest.mark.timeout(600)
QUESTIONS, PER_CHUNK = 12, 4
BOOM = {"(#3)": "ZeroDivisionError", "(#5)": "RecursionError", "(#8)": "KeyError", "(#10)": "UnicodeDecodeError"}


def test_rows_whose_grading_raises_are_errors_counted_in_metrics_and_the_rest_graded(tmp_path, ray_local, drill):
    drill(boom=list(BOOM))
    source = tmp_path / "eval.jsonl"
    write_questions(source, QUESTIONS)
    cfg = load_config(None, [f"run_dir={tmp_path / 'run'}", f"eval.benchmarks=[{source}]", "eval.max_new_tokens=8",
                             "eval.engine.backend=engines:GradingFaultEngine", f"eval.engine.batch_size={PER_CHUNK}",
                             "model=smollm2-135m-instruct"])
    metrics = run_evaluate(cfg, "stand-in", tmp_path / "eval", "grading-faults")
    (name,) = metrics["benchmarks"]
    m = metrics["benchmarks"][name]
    assert (m["graded"], m["rows_rejected"], m["answers_grading_error"]) == (QUESTIONS, 0, len(BOOM))
    assert m["correct"] == QUESTIONS - len(BOOM)  # the others answer \boxed{0}, the gold answer
    rows = pd.read_parquet(tmp_path / "eval" / f"{name}.parquet")
    errors = rows[rows["grade_status"] == "error"]
    booms = {f"s{int(marker.strip('(#)')):07d}": cls for marker, cls in BOOM.items()}
    assert dict(zip(errors["question_id"], errors["grade_error"])) == booms
    assert not errors["correct"].any() and (errors["extracted_answer"] == "").all()
    assert (rows.loc[rows["grade_status"] != "error", "grade_status"] == "ok").all()
    lost, duplicated = lost_and_duplicated(rows["question_id"], [f"s{i:07d}" for i in range(QUESTIONS)])
    assert (lost, duplicated) == (0, 0)
    record_fault(f"grading raises on {len(BOOM)} answers ({len(BOOM)} exception classes)", "evaluate", None, None,
                 lost, duplicated, rows_graded_error=len(errors))
