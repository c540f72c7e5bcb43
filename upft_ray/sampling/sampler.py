"""Prefix sampling: questions -> Ray Data -> vLLM actors -> Parquet shards + manifest.json.

Every question gets one sample. A seeded draw per question id makes a share ``structure_ratio``
of the rows *full* (decoded up to ``max_new_tokens``, trained whole); the rest are *prefix* rows,
decoded for only ``prefix_tokens`` tokens, so no token is sampled that UPFT will not train on.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa

from upft_ray.config import PipelineConfig, config_to_dict
from upft_ray.inference import PROMPT_TOO_LONG, add_generation
from upft_ray.models import resolve_model
from upft_ray.questions import load_questions
from upft_ray.schema import (SAMPLE_SCHEMA, config_hash, package_versions, write_json_atomic,
                             write_rejected)
from upft_ray.templates import chat_messages


def draw_kind(question_id: str, seed: int, structure_ratio: float) -> str:
    """Return "full" for a seeded share ``structure_ratio`` of question ids, else "prefix".

    The draw hashes (seed, id), so it does not depend on row order or on how the rows are split
    across workers, and the same seed always gives the same split."""
    digest = hashlib.sha256(f"{seed}:{question_id}".encode()).digest()
    uniform = int.from_bytes(digest[:8], "big") / 2**64
    return "full" if uniform < structure_ratio else "prefix"


def build_requests(rows: list[dict], cfg: PipelineConfig) -> list[dict]:
    """Return one generation request per question: kind, prompts and sampling params."""
    s = cfg.sample
    requests = []
    for row in rows:
        kind = draw_kind(row["id"], cfg.seed, s.structure_ratio)
        template = s.task_template if kind == "prefix" else ""
        requests.append({
            "question_id": row["id"],
            "question": row["question"],
            "answer": row["answer"],
            "sample_index": 0,
            "kind": kind,
            # The sampler sees the plain question: a prefix is the opening of the model's own
            # natural solution. The task template is for training only (paper, App. A.1).
            "messages": json.dumps(chat_messages(row["question"], s.system_prompt)),
            "train_messages": json.dumps(chat_messages(row["question"], s.system_prompt, template)),
            "task_template": template,
            "max_tokens": s.prefix_tokens if kind == "prefix" else s.max_new_tokens,
            "temperature": s.temperature,
            "top_p": s.top_p,
        })
    return requests


def to_shard_table(batch: pd.DataFrame, model: str, seed: int) -> pa.Table:
    """Return generated rows as a table in SAMPLE_SCHEMA (fails loudly if a column is off)."""
    batch = batch.copy()
    batch["model"] = model
    batch["seed"] = seed
    batch["sampling_params"] = [
        json.dumps({"max_tokens": int(m), "temperature": float(t), "top_p": float(p)})
        for m, t, p in zip(batch["max_tokens"], batch["temperature"], batch["top_p"])
    ]
    for col in ("prompt_token_ids", "response_token_ids"):
        batch[col] = [list(map(int, ids)) for ids in batch[col]]
    return pa.Table.from_pandas(batch[SAMPLE_SCHEMA.names], schema=SAMPLE_SCHEMA, preserve_index=False)


def run_sample(cfg: PipelineConfig) -> dict:
    """Run the sampling stage into ``RUN/sample/``; return the manifest it wrote.

    Writes ``shards/*.parquet`` (SAMPLE_SCHEMA), ``rejected.parquet`` and, last, ``manifest.json``.
    Raises RuntimeError if counts do not balance (rows in != rows written + rows rejected)."""
    import pyarrow.parquet as pq
    import ray.data

    started = time.time()
    s = cfg.sample
    out_dir = cfg.run_path / "sample"
    model_path = resolve_model(cfg.model)
    questions = load_questions(s.questions, s.question_field, s.answer_field, s.id_field, s.max_questions)
    print(f"[sample] {questions.num_read} rows read from {questions.source}; "
          f"{len(questions.rejected)} rejected; model {cfg.model}")
    rejected = list(questions.rejected)
    staging = out_dir / ".shards-staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    if questions.rows:
        requests = build_requests(questions.rows, cfg)
        blocks = max(1, min(len(requests) // max(1, s.engine.batch_size), 64))
        ds = ray.data.from_items(requests, override_num_blocks=blocks)
        ds = add_generation(ds, model_path, s.engine, cfg.seed).materialize()
        too_long = ds.filter(lambda r: r["finish_reason"] == PROMPT_TOO_LONG).take_all()
        rejected += [{"source": questions.source, "line": -1, "raw": json.dumps({"id": r["question_id"]}),
                      "reason": f"prompt of {r['num_prompt_tokens']} tokens does not fit "
                                f"max_model_len {s.engine.max_model_len}"} for r in too_long]
        kept = ds.filter(lambda r: r["finish_reason"] != PROMPT_TOO_LONG)
        kept.map_batches(to_shard_table, batch_format="pandas", fn_kwargs={"model": cfg.model, "seed": cfg.seed}
                         ).write_parquet(str(staging))
    shards_dir = out_dir / "shards"
    shutil.rmtree(shards_dir, ignore_errors=True)
    staging.rename(shards_dir)
    write_rejected(out_dir / "rejected.parquet", rejected)
    table = pq.read_table(shards_dir, schema=SAMPLE_SCHEMA) if any(shards_dir.iterdir()) else SAMPLE_SCHEMA.empty_table()
    manifest = sample_manifest(cfg, model_path, questions.num_read, table, rejected, time.time() - started)
    write_json_atomic(out_dir / "manifest.json", manifest)
    c = manifest["counts"]
    print(f"[sample] wrote {c['rows_written']} rows ({c['prefix_rows']} prefix, {c['full_rows']} full), "
          f"{c['rows_rejected']} rejected; {manifest['tokens']['generated']} tokens generated "
          f"in {manifest['wall_time_s']:.1f}s -> {out_dir}")
    return manifest


def sample_manifest(cfg: PipelineConfig, model_path: str, rows_in: int, table: pa.Table,
                    rejected: list[dict], wall_time_s: float) -> dict:
    """Return the sample manifest: counts that balance, tokens sampled, config and versions."""
    df = table.select(["kind", "num_prompt_tokens", "num_response_tokens"]).to_pandas()
    by_kind = df.groupby("kind")["num_response_tokens"].sum().to_dict()
    counts = {
        "rows_in": rows_in,
        "rows_written": len(df),
        "rows_rejected": len(rejected),
        "prefix_rows": int((df["kind"] == "prefix").sum()),
        "full_rows": int((df["kind"] == "full").sum()),
        "rejected_by_reason": pd.Series([r["reason"] for r in rejected], dtype=object).value_counts().to_dict(),
    }
    if counts["rows_written"] + counts["rows_rejected"] != rows_in:
        raise RuntimeError(f"sample counts do not balance: {counts}")
    sample_cfg = config_to_dict(cfg.sample)
    return {
        "stage": "sample",
        "model": cfg.model,
        "model_path": model_path,
        "seed": cfg.seed,
        "config": sample_cfg,
        "config_hash": config_hash({"model": cfg.model, "seed": cfg.seed, **sample_cfg}),
        "counts": counts,
        "tokens": {
            "prompt": int(df["num_prompt_tokens"].sum()),
            "generated": int(df["num_response_tokens"].sum()),
            "generated_prefix": int(by_kind.get("prefix", 0)),
            "generated_full": int(by_kind.get("full", 0)),
        },
        "shards": sorted(p.name for p in (cfg.run_path / "sample" / "shards").glob("*.parquet")),
        "versions": package_versions(),
        "wall_time_s": round(wall_time_s, 2),
    }
