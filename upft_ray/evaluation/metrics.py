"""An evaluation's metrics per benchmark: accuracy over every sample, pass@k and maj@k, answers by status, and
with an LLM judge (``eval.judge``) the accuracy by the judge and by the rule or the judge."""

from __future__ import annotations

import pandas as pd


def _majority_correct(group: pd.DataFrame) -> bool:
    """Return whether the most frequent extracted answer (ties: earliest sample) was correct."""
    answered = group[group["extracted_answer"] != ""]
    if answered.empty:
        return False
    counts = answered.groupby("extracted_answer", sort=False)["sample_index"].agg(["size", "min"])
    best = counts.sort_values(["size", "min"], ascending=[False, True]).index[0]
    return bool(answered.loc[answered["extracted_answer"] == best, "correct"].iloc[0])


def benchmark_metrics(part: pd.DataFrame, rows_read: int, rows_rejected: int, k: int) -> dict:
    """Return the metrics of one benchmark's graded rows (accuracy = mean over all samples), with the
    answers that were missing, unparsable, timed out or whose grading raised (rows from before
    ``grade_status`` existed: missing = no extracted answer, the others 0)."""
    per_question = part.groupby("question_id")
    if "grade_status" in part:
        status = part["grade_status"]
    else:
        status = pd.Series(["missing" if a == "" else "ok" for a in part["extracted_answer"]], dtype=object)
    metrics = {
        "accuracy": float(part["correct"].mean()) if len(part) else 0.0,
        "correct": int(part["correct"].sum()),
        "graded": len(part),
        "questions": int(per_question.ngroups),
        "rows_read": rows_read,
        "rows_rejected": rows_rejected,
        "mean_output_tokens": float(part["num_output_tokens"].mean()) if len(part) else 0.0,
        "answers_extracted": int((part["extracted_answer"] != "").sum()),
        "answers_missing": int((status == "missing").sum()),
        "answers_unparsable": int((status == "unparsable").sum()),
        "answers_timed_out": int((status == "timeout").sum()),
        "answers_grading_error": int((status == "error").sum()),
    }
    if k > 1 and len(part):
        metrics[f"pass@{k}"] = float(per_question["correct"].any().mean())
        metrics[f"maj@{k}"] = float(per_question.apply(_majority_correct, include_groups=False).mean())
    if "judge_status" in part:
        metrics.update(judge_metrics(part))
    return metrics


def judge_metrics(part: pd.DataFrame) -> dict:
    """Return the accuracy of one benchmark's judged rows by the LLM judge and by the rule OR the judge (the
    official evaluation's), with the verdicts that could not be read or were not given; a row without a
    verdict counts as not correct by the judge, as the official code counts "Failed to parse"."""
    judge, either = part["judge_correct"].eq(True), part["correct_rule_or_judge"].astype(bool)
    return {
        "accuracy_judge": float(judge.mean()) if len(part) else 0.0,
        "correct_judge": int(judge.sum()),
        "accuracy_rule_or_judge": float(either.mean()) if len(part) else 0.0,
        "correct_rule_or_judge": int(either.sum()),
        "judge_unparsable": int((part["judge_status"] == "unparsable").sum()),
        "judge_unanswered": int((part["judge_status"] == "unanswered").sum()),
    }
