"""Evaluation: benchmarks -> one Ray Dataset -> vLLM actors (greedy) -> grading tasks -> Parquet.

Writes ``<out>/<benchmark>.parquet`` (EVAL_SCHEMA), ``<out>/rejected.parquet`` (unusable question
rows, with reasons) and, last, ``<out>/metrics.json`` with accuracy per benchmark.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from upft_ray.config import PipelineConfig, config_to_dict
from upft_ray.grading import grade
from upft_ray.inference import PROMPT_TOO_LONG, add_generation
from upft_ray.questions import load_questions, source_name
from upft_ray.schema import EVAL_SCHEMA, package_versions, write_json_atomic, write_rejected
from upft_ray.templates import chat_messages


def grade_batch(batch: pd.DataFrame) -> pd.DataFrame:
    """Return ``batch`` (generation output) graded, with exactly the EVAL_SCHEMA columns."""
    graded = [grade(text, gold) for text, gold in zip(batch["response_text"], batch["answer"])]
    return pd.DataFrame({
        "benchmark": batch["benchmark"],
        "question_id": batch["question_id"],
        "question": batch["question"],
        "prompt": batch["prompt"],
        "output": batch["response_text"],
        "extracted_answer": [p if p is not None else "" for p, _ in graded],
        "gold": batch["answer"],
        "correct": [ok for _, ok in graded],
        "num_output_tokens": batch["num_response_tokens"].astype("int64"),
        "finish_reason": batch["finish_reason"],
    })


def build_eval_requests(cfg: PipelineConfig) -> tuple[list[dict], list[dict], dict[str, int]]:
    """Return (generation requests, rejected rows, rows read per benchmark) for eval.benchmarks.

    Each rejected row carries a ``benchmark`` key besides the REJECTED_SCHEMA columns."""
    e, s = cfg.eval, cfg.sample
    requests, rejected, read = [], [], {}
    for source in e.benchmarks:
        name = source_name(source)
        qs = load_questions(source, max_questions=e.max_questions)
        read[name] = qs.num_read
        rejected += [{**r, "benchmark": name} for r in qs.rejected]
        for row in qs.rows:
            requests.append({
                "benchmark": name, "question_id": row["id"], "question": row["question"],
                "answer": row["answer"],
                "messages": json.dumps(chat_messages(row["question"], s.system_prompt)),
                "max_tokens": e.max_new_tokens, "temperature": 0.0, "top_p": 1.0,
            })
    return requests, rejected, read


def run_evaluate(cfg: PipelineConfig, model_path: str, out_dir: Path, label: str) -> dict:
    """Evaluate the checkpoint at ``model_path`` greedily; write results to ``out_dir``; return metrics."""
    import ray.data

    started = time.time()
    requests, rejected, read = build_eval_requests(cfg)
    print(f"[eval:{label}] {len(requests)} questions from {', '.join(read)}; model {model_path}")
    out_dir.mkdir(parents=True, exist_ok=True)
    graded = EVAL_SCHEMA.empty_table().to_pandas()
    if requests:
        ds = ray.data.from_items(requests, override_num_blocks=max(1, min(len(requests) // 16, 64)))
        ds = add_generation(ds, model_path, cfg.eval.engine, cfg.seed)
        graded = ds.map_batches(grade_batch, batch_format="pandas", num_cpus=0.5).to_pandas()
    too_long = graded["finish_reason"] == PROMPT_TOO_LONG
    rejected += [{"benchmark": r.benchmark, "source": r.benchmark, "line": -1,
                  "reason": f"prompt does not fit max_model_len {cfg.eval.engine.max_model_len}",
                  "raw": json.dumps({"id": r.question_id})} for r in graded[too_long].itertuples()]
    graded = graded[~too_long].sort_values(["benchmark", "question_id"], kind="stable")
    write_rejected(out_dir / "rejected.parquet", [{k: r[k] for k in ("source", "line", "reason", "raw")}
                                                  for r in rejected])
    metrics = {"label": label, "model_path": model_path, "benchmarks": {}}
    for name, rows_read in read.items():
        part = graded[graded["benchmark"] == name]
        pq.write_table(pa.Table.from_pandas(part, schema=EVAL_SCHEMA, preserve_index=False),
                       out_dir / f"{name}.parquet")
        n_rej = sum(1 for r in rejected if r["benchmark"] == name)
        if len(part) + n_rej != rows_read:
            raise RuntimeError(f"eval counts do not balance for {name}: read {rows_read}, "
                               f"graded {len(part)}, rejected {n_rej}")
        metrics["benchmarks"][name] = {
            "accuracy": float(part["correct"].mean()) if len(part) else 0.0,
            "correct": int(part["correct"].sum()),
            "graded": len(part),
            "rows_read": rows_read,
            "rows_rejected": n_rej,
            "mean_output_tokens": float(part["num_output_tokens"].mean()) if len(part) else 0.0,
            "answers_extracted": int((part["extracted_answer"] != "").sum()),
        }
    metrics.update(config=config_to_dict(cfg.eval), versions=package_versions(),
                   wall_time_s=round(time.time() - started, 2))
    write_json_atomic(out_dir / "metrics.json", metrics)
    for name, m in metrics["benchmarks"].items():
        print(f"[eval:{label}] {name}: accuracy {m['accuracy']:.3f} ({m['correct']}/{m['graded']})")
    return metrics
