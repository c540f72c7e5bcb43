"""A sampled unit becomes its shard: the rows kept (SAMPLE_SCHEMA), the records rejected, the counts.

The ``finish`` step of sampling's chunked run (``upft_ray.execution.job``): each unit of a chunk ends
as ``shards/shard-KEY.parquet`` (none when every record was rejected, as an empty Parquet file trips
some readers), ``rejected/chunk-KEY.parquet`` and, last, its summary (``upft_ray.io.chunk_store``).
A question the engine could not answer is rejected whole, with the reason of its first failed sample:
its prompt does not fit, or one of its requests failed alone (``request_failed: <why>``).
"""

from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa

from upft_ray.engine.settings import PROMPT_TOO_LONG, unanswered
from upft_ray.io.schema import SAMPLE_SCHEMA
from upft_ray.sampling.requests import SampleContext


def to_shard_table(rows: pd.DataFrame, model: str, seed: int) -> pa.Table:
    """Return generated rows (at least one) as a table in SAMPLE_SCHEMA."""
    rows = rows.assign(model=model, seed=seed, sampling_params=[
        json.dumps({"max_tokens": int(m), "temperature": float(t), "top_p": float(p), "top_k": int(k), "seed": int(r)})
        for m, t, p, k, r in zip(rows["max_tokens"], rows["temperature"], rows["top_p"], rows["top_k"],
                                 rows["request_seed"])])
    for col in ("prompt_token_ids", "response_token_ids"):
        rows[col] = [list(map(int, ids)) for ids in rows[col]]
    return pa.Table.from_pandas(rows[SAMPLE_SCHEMA.names], schema=SAMPLE_SCHEMA, preserve_index=False)


def rejected_records(rows: pd.DataFrame, max_model_len: int) -> list[dict]:
    """Return one REJECTED_SCHEMA row per record of ``rows`` not written: rejected before the engine, or a
    question the engine could not answer (its first failed sample's reason)."""
    bad = rows[rows["reject_reason"] != ""].drop_duplicates("record")
    out = [{"source": r.source, "line": int(r.number), "reason": r.reject_reason, "raw": r.raw}
           for r in bad.itertuples()]
    sent = rows[rows["reject_reason"] == ""]
    failed = sent[[unanswered(f) for f in sent["finish_reason"]]].drop_duplicates("question_id")
    for r in failed.itertuples():
        reason = (f"prompt too long: {r.num_prompt_tokens} tokens, max_model_len {max_model_len}"
                  if r.finish_reason == PROMPT_TOO_LONG else r.finish_reason)
        out.append({"source": r.source, "line": int(r.number), "raw": json.dumps({"id": r.question_id}),
                    "reason": reason})
    return out


def finish_unit(rows: pd.DataFrame, context: SampleContext) -> tuple[pa.Table | None, list[dict], dict]:
    """Return (shard table or None, rejected rows, counts) of one sampled unit (``upft_ray.execution.job``)."""
    rejected = rejected_records(rows, context.sample.engine.max_model_len)
    sent = rows[rows["reject_reason"] == ""]
    failed_ids = set(sent.loc[[unanswered(f) for f in sent["finish_reason"]], "question_id"])
    kept = sent[~sent["question_id"].isin(failed_ids)]
    first = kept[kept["sample_index"] == 0]
    records = int(rows["record"].nunique())
    counts = {
        "records": records, "kept": int(kept["question_id"].nunique()), "rejected": len(rejected),
        "questions": int(kept["question_id"].nunique()), "rows": len(kept),
        "prefix_rows": int((kept["kind"] == "prefix").sum()), "full_rows": int((kept["kind"] == "full").sum()),
        "prompt_tokens": int(first["num_prompt_tokens"].sum()),
        "generated_tokens": int(kept["num_response_tokens"].sum()),
        "generated_prefix": int(kept.loc[kept["kind"] == "prefix", "num_response_tokens"].sum()),
        "generated_full": int(kept.loc[kept["kind"] == "full", "num_response_tokens"].sum()),
    }
    if counts["kept"] + counts["rejected"] != records:
        raise RuntimeError(f"{counts['kept']} questions + {counts['rejected']} rejected != {records} records")
    table = to_shard_table(kept, context.model, context.seed) if len(kept) else None
    return table, rejected, counts
