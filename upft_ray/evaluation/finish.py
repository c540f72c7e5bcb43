"""An evaluated unit becomes its rows: each answer graded (never raising), unanswered questions rejected.

The ``finish`` step of evaluation's chunked run (``upft_ray.execution.job``). Grading a row can meet
anything a model writes; whatever it raises costs that row only: the row gets ``grade_status: error``
and the exception's class in ``grade_error``, is counted in the metrics, and the unit goes on.
"""

from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa

from upft_ray.engine.settings import PROMPT_TOO_LONG, unanswered
from upft_ray.evaluation.benchmarks import BENCHMARKS, GENERIC
from upft_ray.evaluation.requests import EvalContext
from upft_ray.grading import grade_safely
from upft_ray.io.schema import EVAL_SCHEMA


def grade_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """Return generated ``rows`` graded by each row's benchmark, in EVAL_SCHEMA columns (``grade_status``: ok,
    missing, unparsable, timeout or error)."""
    graded = [grade_safely(text, gold, BENCHMARKS.get(b, GENERIC).grader)
              for b, text, gold in zip(rows["benchmark"], rows["response_text"], rows["answer"])]
    return pd.DataFrame({
        "benchmark": rows["benchmark"],
        "question_id": rows["question_id"],
        "sample_index": rows["sample_index"].astype("int64"),
        "question": rows["question"],
        "prompt": rows["prompt"],
        "output": rows["response_text"],
        "extracted_answer": [g.answer if g.answer is not None else "" for g in graded],
        "gold": rows["answer"],
        "correct": [bool(g.correct) for g in graded],
        "grade_status": [g.status for g in graded],
        "grade_error": [g.error for g in graded],
        "num_output_tokens": rows["num_response_tokens"].astype("int64"),
        "finish_reason": rows["finish_reason"],
    }, columns=EVAL_SCHEMA.names)


def engine_rejects(rows: pd.DataFrame, max_model_len: int) -> list[dict]:
    """Return one rejected row per question the engine could not answer: a prompt that does not fit
    ``max_model_len``, or a request that failed alone (``request_failed: <reason>``, the first sample's)."""
    bad = rows[[unanswered(f) for f in rows["finish_reason"]]]
    return [{"source": r.benchmark, "line": -1, "raw": json.dumps({"id": r.question_id}),
             "reason": f"prompt does not fit max_model_len {max_model_len}" if r.finish_reason == PROMPT_TOO_LONG
             else r.finish_reason}
            for r in bad.drop_duplicates(["benchmark", "question_id"]).itertuples()]


def finish_unit(rows: pd.DataFrame, context: EvalContext) -> tuple[pa.Table | None, list[dict], dict]:
    """Return (graded rows or None, rejected rows, counts) of one evaluated unit (``upft_ray.execution.job``).

    A question with one unanswered sample is rejected whole: its samples are graded together (pass@k).
    A question set aside before the engine (quarantined for killing engines) is rejected with that reason."""
    set_aside = rows[rows["reject_reason"] != ""].drop_duplicates(["benchmark", "question_id"])
    rejected = [{"source": r.benchmark, "line": -1, "raw": json.dumps({"id": r.question_id}), "reason": r.reject_reason}
                for r in set_aside.itertuples()]
    sent = rows[rows["reject_reason"] == ""]
    rejected += engine_rejects(sent, context.eval.engine.max_model_len)
    failed = {(r["source"], json.loads(r["raw"])["id"]) for r in rejected}
    keep = [(b, q) not in failed for b, q in zip(sent["benchmark"], sent["question_id"])]
    graded = grade_rows(sent[keep]) if any(keep) else None
    by_benchmark: dict[str, dict[str, int]] = {}
    for name, group in rows.groupby("benchmark"):
        questions = set(group["question_id"])
        gone = {q for b, q in failed if b == name}
        by_benchmark[name] = {"kept": len(questions - gone), "rejected": len(questions & gone)}
    records = int(rows["record"].nunique())
    counts = {"records": records, "kept": sum(b["kept"] for b in by_benchmark.values()), "rejected": len(rejected),
              "generated_tokens": int(sent["num_response_tokens"].sum()), "by_benchmark": by_benchmark}
    if counts["kept"] + counts["rejected"] != records:
        raise RuntimeError(f"{counts['kept']} graded + {counts['rejected']} rejected != {records} questions")
    table = pa.Table.from_pandas(graded, schema=EVAL_SCHEMA, preserve_index=False) if graded is not None else None
    return table, rejected, counts
