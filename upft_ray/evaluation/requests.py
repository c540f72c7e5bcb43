"""Evaluation requests: every benchmark's questions as prompts, cut into chunks of whole questions.

Evaluation sets are small enough to read whole in the driver. Each question gets ``num_samples``
requests (greedy: one); a chunk holds whole questions (a question's samples are graded together,
for pass@k), about ``eval.engine.batch_size`` requests, and is the unit an evaluation commits and
resumes by (``upft_ray.execution``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd

from upft_ray.config import EvalConfig, PipelineConfig
from upft_ray.engine.prompts import chat_messages
from upft_ray.engine.settings import request_seed
from upft_ray.evaluation.benchmarks import load_benchmark

REQUEST_COLUMNS = ["record", "benchmark", "question_id", "sample_index", "question", "answer", "messages",
                   "max_tokens", "temperature", "top_p", "request_seed", "reject_reason", "source", "number", "raw"]


@dataclass(frozen=True)
class EvalContext:
    """What the evaluation steps of a chunk need: the eval config (grading, token limits)."""
    eval: EvalConfig


def build_eval_requests(cfg: PipelineConfig) -> tuple[list[dict], list[dict], dict[str, int]]:
    """Return (generation requests, rejected rows, rows read per benchmark) for eval.benchmarks.

    Requests come question by question (a question's samples together); each rejected row carries a
    ``benchmark`` key besides the REJECTED_SCHEMA columns."""
    e = cfg.eval
    requests, rejected, read = [], [], {}
    for spec in e.benchmarks:
        name, _, qs = load_benchmark(spec, cfg.seed, e.max_questions, e.columns_spec())
        read[name] = qs.num_read
        rejected += [{**r, "benchmark": name} for r in qs.rejected]
        for row in qs.rows:
            try:
                requests += question_requests(name, row, cfg)
            except Exception as err:  # noqa: BLE001 -- one question's failure costs that question only
                rejected.append({"source": name, "line": -1, "raw": json.dumps({"id": str(row.get("id", ""))}),
                                 "benchmark": name, "reason": f"request_build_error: {type(err).__name__}: "
                                                              f"{' '.join(str(err).split())[:300]}"})
    return requests, rejected, read


def question_requests(name: str, row: dict, cfg: PipelineConfig) -> list[dict]:
    """Return the generation requests of one question of benchmark ``name`` (one per sample)."""
    e, sampled = cfg.eval, cfg.eval.decoding == "sample"
    messages = json.dumps(chat_messages(row["question"], cfg.sample.system_prompt))
    return [{"benchmark": name, "question_id": row["id"], "sample_index": k, "question": row["question"],
             "answer": row["answer"], "messages": messages, "max_tokens": e.max_new_tokens,
             "temperature": e.temperature if sampled else 0.0, "top_p": e.top_p if sampled else 1.0,
             "request_seed": request_seed(cfg.seed, row["id"], k, name)} for k in range(e.num_samples)]


def cut_chunks(requests: list[dict], per_chunk: int) -> list[list[dict]]:
    """Return ``requests`` cut into chunks of whole questions, each about ``per_chunk`` requests (at least
    one question); each request gets its question's index in the chunk as ``record``."""
    chunks: list[list[dict]] = []
    current: list[dict] = []
    last = None
    for request in requests:
        key = (request["benchmark"], request["question_id"])
        if key != last and len(current) >= per_chunk:
            chunks.append(current)
            current = []
        if key != last:
            record = (current[-1]["record"] + 1) if current else 0
        current.append({**request, "record": record})
        last = key
    return chunks + ([current] if current else [])


def read_eval_chunk(spec: list[dict], context: EvalContext) -> pd.DataFrame:
    """Return a chunk's request rows (``upft_ray.execution.job``): they were built with the plan."""
    rows = [{**r, "reject_reason": "", "source": r["benchmark"], "number": -1, "raw": ""} for r in spec]
    return pd.DataFrame(rows, columns=REQUEST_COLUMNS)
