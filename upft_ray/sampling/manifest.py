"""``RUN/sample/manifest.json``: built from the committed units' summaries, with counts that balance.

Every record of the plan is a question written or a row of ``rejected.parquet`` (merged from the units'
rejected parts), counted by reason; tokens are summed from the summaries, never from the driver's memory.
"""

from __future__ import annotations

import pandas as pd
import pyarrow.parquet as pq

from upft_ray.config import PipelineConfig, config_to_dict
from upft_ray.io.chunk_store import ChunkStore, merge_parts
from upft_ray.io.manifests import package_versions
from upft_ray.io.schema import REJECTED_SCHEMA
from upft_ray.sampling.plan import Plan


def merge_rejected(store: ChunkStore, keys: list[str]) -> dict[str, int]:
    """Merge the rejected parts of units ``keys`` into ``rejected.parquet``; return the count per reason kind."""
    parts = [store.rejected_path(k) for k in keys if store.rejected_path(k).is_file()]
    merge_parts(parts, REJECTED_SCHEMA, store.out_dir / "rejected.parquet")
    reasons: dict[str, int] = {}
    for reason in pq.read_table(store.out_dir / "rejected.parquet", columns=["reason"]).column("reason").to_pylist():
        kind = reason.split(":", 1)[0]  # "kind: detail" -> kind
        reasons[kind] = reasons.get(kind, 0) + 1
    return reasons


def sample_manifest(cfg: PipelineConfig, model_path: str, plan: Plan, store: ChunkStore, run_hash: str,
                    reused: int, wall_time_s: float) -> dict:
    """Return the sample manifest, built from the units' summaries: counts that balance, tokens, versions.

    Raises RuntimeError if a chunk is unfinished or the counts do not balance."""
    keys = store.committed_units((c.index, c.records) for c in plan.chunks)
    summaries = pd.DataFrame([store.read_summary(k) for k in keys])
    total = summaries.sum(numeric_only=True) if len(summaries) else pd.Series(dtype="int64")
    reasons = merge_rejected(store, keys)
    counts = {
        "rows_in": plan.records,
        "questions_written": int(total.get("questions", 0)),
        "rows_written": int(total.get("rows", 0)),
        "rows_rejected": int(total.get("rejected", 0)),
        "samples_per_question": cfg.sample.num_samples,
        "prefix_rows": int(total.get("prefix_rows", 0)),
        "full_rows": int(total.get("full_rows", 0)),
        "rejected_by_reason": reasons,
    }
    if counts["questions_written"] + counts["rows_rejected"] != plan.records or \
            sum(reasons.values()) != counts["rows_rejected"]:
        raise RuntimeError(f"sample counts do not balance: {counts}")
    gen_window = (summaries["finished"].max() - summaries["started"].min()) if len(summaries) else 0.0
    return {
        "stage": "sample", "model": cfg.model, "model_path": model_path, "seed": cfg.seed,
        "config": config_to_dict(cfg.sample), "config_hash": run_hash, "counts": counts,
        "tokens": {
            "prompt": int(total.get("prompt_tokens", 0)),
            "generated": int(total.get("generated_tokens", 0)),
            "generated_prefix": int(total.get("generated_prefix", 0)),
            "generated_full": int(total.get("generated_full", 0)),
        },
        "shards": {"total": len(plan.chunks), "reused": reused, "written": len(plan.chunks) - reused,
                   "units": len(keys), "rows_per_shard": cfg.sample.rows_per_shard},
        "faults": store.fault_counts(),
        "engine_dtypes": store.engine_dtypes(),
        "versions": package_versions(),
        "generation_window_s": round(float(gen_window), 2),
        "wall_time_s": round(wall_time_s, 2),
    }
