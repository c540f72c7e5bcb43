"""Evaluation: benchmarks -> one Ray Dataset -> vLLM actors -> grading tasks (CPU) -> Parquet.

Writes ``<out>/<benchmark>.parquet`` (EVAL_SCHEMA, one row per question and sample),
``<out>/rejected.parquet`` (unusable question rows, with reasons) and, last, ``<out>/metrics.json``:
accuracy per benchmark (mean over samples), the answers that were missing, unparsable or timed out,
and pass@k / maj@k when k > 1 samples are drawn.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa

from upft_ray.config import PipelineConfig, config_to_dict
from upft_ray.durable import write_parquet_durably
from upft_ray.evaluation.benchmarks import BENCHMARKS, GENERIC, load_benchmark
from upft_ray.inference import PROMPT_TOO_LONG, REQUEST_FAILED, add_generation, request_seed
from upft_ray.schema import EVAL_SCHEMA, package_versions, write_json_atomic, write_rejected
from upft_ray.templates import chat_messages


def _status(graded: tuple) -> str:
    """A grader's status (upft_ray.grading graders carry one); a plain (answer, correct) pair: found or not."""
    status = getattr(graded, "status", None)
    return status or ("missing" if graded[0] is None else "ok")


def grade_batch(batch: pd.DataFrame) -> pd.DataFrame:
    """Return ``batch`` (generation output) graded by each row's benchmark, in EVAL_SCHEMA columns
    (``grade_status``: ok, missing, unparsable or timeout)."""
    graded = [BENCHMARKS.get(bench, GENERIC).grader(text, gold)
              for bench, text, gold in zip(batch["benchmark"], batch["response_text"], batch["answer"])]
    return pd.DataFrame({
        "benchmark": batch["benchmark"],
        "question_id": batch["question_id"],
        "sample_index": batch["sample_index"].astype("int64"),
        "question": batch["question"],
        "prompt": batch["prompt"],
        "output": batch["response_text"],
        "extracted_answer": [g[0] if g[0] is not None else "" for g in graded],
        "gold": batch["answer"],
        "correct": [bool(g[1]) for g in graded],
        "grade_status": [_status(g) for g in graded],
        "num_output_tokens": batch["num_response_tokens"].astype("int64"),
        "finish_reason": batch["finish_reason"],
    })


def build_eval_requests(cfg: PipelineConfig) -> tuple[list[dict], list[dict], dict[str, int]]:
    """Return (generation requests, rejected rows, rows read per benchmark) for eval.benchmarks.

    Each rejected row carries a ``benchmark`` key besides the REJECTED_SCHEMA columns."""
    e, s = cfg.eval, cfg.sample
    sampled = e.decoding == "sample"
    requests, rejected, read = [], [], {}
    for spec in e.benchmarks:
        name, _, qs = load_benchmark(spec, cfg.seed, e.max_questions, e.columns_spec())
        read[name] = qs.num_read
        rejected += [{**r, "benchmark": name} for r in qs.rejected]
        for row in qs.rows:
            for k in range(e.num_samples):
                requests.append({
                    "benchmark": name, "question_id": row["id"], "sample_index": k,
                    "question": row["question"], "answer": row["answer"],
                    "messages": json.dumps(chat_messages(row["question"], s.system_prompt)),
                    "max_tokens": e.max_new_tokens,
                    "temperature": e.temperature if sampled else 0.0,
                    "top_p": e.top_p if sampled else 1.0,
                    "request_seed": request_seed(cfg.seed, row["id"], k, name),
                })
    return requests, rejected, read


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
    answers that were missing, unparsable or timed out (rows from before ``grade_status`` existed:
    missing = no extracted answer, the others 0)."""
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
    }
    if k > 1 and len(part):
        metrics[f"pass@{k}"] = float(per_question["correct"].any().mean())
        metrics[f"maj@{k}"] = float(per_question.apply(_majority_correct, include_groups=False).mean())
    return metrics


def engine_rejects(graded: pd.DataFrame, max_model_len: int) -> list[dict]:
    """Return one rejected row per question the engine could not answer: a prompt that does not fit
    ``max_model_len``, or a request that failed alone (``request_failed: <reason>``, the first sample's)."""
    bad = graded[[str(f).startswith((PROMPT_TOO_LONG, REQUEST_FAILED)) for f in graded["finish_reason"]]]
    return [{"benchmark": r.benchmark, "source": r.benchmark, "line": -1, "raw": json.dumps({"id": r.question_id}),
             "reason": f"prompt does not fit max_model_len {max_model_len}" if r.finish_reason == PROMPT_TOO_LONG
             else r.finish_reason}
            for r in bad.drop_duplicates(["benchmark", "question_id"]).itertuples()]


def run_evaluate(cfg: PipelineConfig, model_path: str, out_dir: Path, label: str) -> dict:
    """Evaluate the checkpoint at ``model_path``; write results to ``out_dir``; return the metrics.

    Raises RuntimeError if a benchmark's counts do not balance (read != questions graded + rejected)."""
    import ray.data

    started = time.time()
    e = cfg.eval
    requests, rejected, read = build_eval_requests(cfg)
    print(f"[eval:{label}] {len(requests)} generations ({e.decoding}, k={e.num_samples}) over "
          f"{', '.join(read)}; model {model_path}")
    out_dir.mkdir(parents=True, exist_ok=True)
    graded = EVAL_SCHEMA.empty_table().to_pandas()
    if requests:
        ds = ray.data.from_items(requests, override_num_blocks=max(1, min(len(requests) // 16, 64)))
        ds = add_generation(ds, model_path, e.engine, cfg.seed)
        graded = ds.map_batches(grade_batch, batch_format="pandas", num_cpus=0.5).to_pandas()
    unanswered = engine_rejects(graded, e.engine.max_model_len)
    rejected += unanswered
    # A question with one failed sample is rejected whole: its k samples are graded together (pass@k).
    failed = {(r["benchmark"], json.loads(r["raw"])["id"]) for r in unanswered}
    keep = [(b, q) not in failed for b, q in zip(graded["benchmark"], graded["question_id"])]
    graded = graded[keep].sort_values(["benchmark", "question_id", "sample_index"], kind="stable")
    write_rejected(out_dir / "rejected.parquet", [{k: r[k] for k in ("source", "line", "reason", "raw")}
                                                  for r in rejected])
    metrics = {"label": label, "model_path": model_path, "benchmarks": {}}
    for name, rows_read in read.items():
        part = graded[graded["benchmark"] == name]
        write_parquet_durably(pa.Table.from_pandas(part, schema=EVAL_SCHEMA, preserve_index=False),
                              out_dir / f"{name}.parquet")
        n_rej = sum(1 for r in rejected if r["benchmark"] == name)
        m = benchmark_metrics(part, rows_read, n_rej, e.num_samples)
        if m["questions"] + n_rej != rows_read:
            raise RuntimeError(f"eval counts do not balance for {name}: read {rows_read}, "
                               f"graded {m['questions']}, rejected {n_rej}")
        metrics["benchmarks"][name] = m
    metrics.update(config=config_to_dict(e), versions=package_versions(),
                   wall_time_s=round(time.time() - started, 2))
    write_json_atomic(out_dir / "metrics.json", metrics)
    for name, m in metrics["benchmarks"].items():
        extra = "".join(f", {key} {m[key]:.3f}" for key in m if key.startswith(("pass@", "maj@")))
        print(f"[eval:{label}] {name}: accuracy {m['accuracy']:.3f} ({m['correct']}/{m['graded']}){extra}")
    return metrics
