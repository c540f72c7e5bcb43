"""The sampling actor: generate one chunk's samples, then write the chunk's shard, atomically.

Each chunk ends as ``shards/shard-{chunk:06d}.parquet`` (SAMPLE_SCHEMA; none when every record
was rejected, as an empty Parquet file trips some readers), ``rejected/chunk-{chunk:06d}.parquet``
(when some were) and, last, ``chunks/chunk-{chunk:06d}.json``: the chunk's counts and token totals.
Every file goes to a hidden temporary name first and is renamed into place, so no reader ever sees
half a file; the summary is the commit mark: a chunk without one is redone in full by the next
attempt (rewriting, not duplicating, any shard it left), and the manifest is built from summaries.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from upft_ray.durable import write_parquet_durably
from upft_ray.inference import PROMPT_TOO_LONG, REQUEST_FAILED, VLLMGenerator
from upft_ray.schema import REJECTED_SCHEMA, SAMPLE_SCHEMA, read_json, write_json_atomic

GENERATED_COLUMNS = ["prompt", "prompt_token_ids", "num_prompt_tokens", "response_text", "response_token_ids",
                     "num_response_tokens", "finish_reason"]


def shard_path(out_dir: Path, chunk: int) -> Path:
    """Return where chunk ``chunk``'s shard lives."""
    return out_dir / "shards" / f"shard-{chunk:06d}.parquet"


def rejected_part_path(out_dir: Path, chunk: int) -> Path:
    """Return where chunk ``chunk``'s rejected records live."""
    return out_dir / "rejected" / f"chunk-{chunk:06d}.parquet"


def summary_path(out_dir: Path, chunk: int) -> Path:
    """Return where chunk ``chunk``'s summary (its commit mark) lives."""
    return out_dir / "chunks" / f"chunk-{chunk:06d}.json"


def read_summary(out_dir: Path, chunk: int) -> dict:
    """Return the summary of a finished chunk."""
    return read_json(summary_path(out_dir, chunk))


def write_parquet_atomic(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` through a hidden temporary file, fsync and a rename (durable, fenced)."""
    write_parquet_durably(table, path)


def to_shard_table(rows: pd.DataFrame, model: str, seed: int) -> pa.Table:
    """Return generated rows (at least one) as a table in SAMPLE_SCHEMA."""
    rows = rows.assign(model=model, seed=seed, sampling_params=[
        json.dumps({"max_tokens": int(m), "temperature": float(t), "top_p": float(p), "top_k": int(k), "seed": int(r)})
        for m, t, p, k, r in zip(rows["max_tokens"], rows["temperature"], rows["top_p"], rows["top_k"],
                                 rows["request_seed"])])
    for col in ("prompt_token_ids", "response_token_ids"):
        rows[col] = [list(map(int, ids)) for ids in rows[col]]
    return pa.Table.from_pandas(rows[SAMPLE_SCHEMA.names], schema=SAMPLE_SCHEMA, preserve_index=False)


def _node_id() -> str:
    """Return the Ray node this process runs on ("" outside Ray), recorded in each chunk's summary."""
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""


def _log_chunk_start(chunk: int, node_id: str, when: float) -> None:
    # Diagnostics for node-loss tests and benchmarks: with UPFT_CHUNK_LOG=FILE every chunk start is
    # appended there (with the engine actor's pid), so the work a lost node or a killed engine had
    # started (and that was redone) can be counted.
    path = os.environ.get("UPFT_CHUNK_LOG")
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps({"chunk": chunk, "node_id": node_id, "started": when, "pid": os.getpid()}) + "\n")


class ChunkSampler:
    """Ray Data actor holding one generation engine (vLLM, built once): samples each chunk it is given
    (generation) and writes that chunk's shard.

    ``engine_cls`` is the engine's class: VLLMGenerator in every real run. The scale benchmark
    passes a stand-in that fabricates tokens, to measure the pipeline's own overhead."""

    def __init__(self, out_dir: str, model_path: str, engine: dict, seed: int, model_name: str,
                 engine_cls: type = VLLMGenerator):
        started = time.time()
        self.engine = engine_cls(model_path, engine, seed)
        self.engine_init_s = time.time() - started
        self.out_dir, self.model_name, self.seed = Path(out_dir), model_name, seed
        self.max_model_len = engine["max_model_len"]
        self.node_id = _node_id()

    async def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame([await self._write_chunk(part) for _, part in batch.groupby("chunk", sort=False)])

    async def _write_chunk(self, part: pd.DataFrame) -> dict:
        started = time.time()
        chunk, expected = int(part["chunk"].iloc[0]), int(part["chunk_records"].iloc[0])
        if summary_path(self.out_dir, chunk).is_file():
            # Committed already: Ray Data retries every batch of a lost actor, also one whose chunk was
            # committed before its result reached the driver. Exactly once: keep what was committed.
            return read_json(summary_path(self.out_dir, chunk))
        _log_chunk_start(chunk, self.node_id, started)
        if part["number"].nunique() != expected:
            raise RuntimeError(f"chunk {chunk} arrived split ({part['number'].nunique()} of {expected} records); "
                               "shards must hold whole chunks")
        bad = part[part["reject_reason"] != ""]
        todo = part[part["reject_reason"] == ""].reset_index(drop=True)
        rejected = [{"source": r.source, "line": int(r.number), "reason": r.reject_reason, "raw": r.raw}
                    for r in bad.itertuples()]
        generated = await self._generate(todo)
        # A question the engine could not answer is rejected whole, with the reason of its first failed
        # sample: its prompt does not fit, or one of its requests failed alone (request_failed: why).
        unanswered = pd.Series([str(f).startswith((PROMPT_TOO_LONG, REQUEST_FAILED))
                                for f in generated["finish_reason"]], index=generated.index, dtype=bool)
        for r in generated[unanswered].drop_duplicates("question_id").itertuples():
            reason = (f"prompt too long: {r.num_prompt_tokens} tokens, max_model_len {self.max_model_len}"
                      if r.finish_reason == PROMPT_TOO_LONG else r.finish_reason)
            rejected.append({"source": r.source, "line": int(r.number), "raw": json.dumps({"id": r.question_id}),
                             "reason": reason})
        kept = generated[~generated["question_id"].isin(generated.loc[unanswered, "question_id"])]
        first = kept[kept["sample_index"] == 0]
        summary = {
            "chunk": chunk, "records": expected, "questions": int(kept["question_id"].nunique()),
            "rows": len(kept), "rejected": len(rejected),
            "prefix_rows": int((kept["kind"] == "prefix").sum()), "full_rows": int((kept["kind"] == "full").sum()),
            "prompt_tokens": int(first["num_prompt_tokens"].sum()),
            "generated_tokens": int(kept["num_response_tokens"].sum()),
            "generated_prefix": int(kept.loc[kept["kind"] == "prefix", "num_response_tokens"].sum()),
            "generated_full": int(kept.loc[kept["kind"] == "full", "num_response_tokens"].sum()),
            "engine_init_s": round(self.engine_init_s, 3), "started": started, "node_id": self.node_id,
        }
        if summary["questions"] + summary["rejected"] != expected:
            raise RuntimeError(f"chunk {chunk}: {summary['questions']} questions + {summary['rejected']} "
                               f"rejected != {expected} records")
        if rejected:
            write_parquet_atomic(pa.Table.from_pylist(rejected, schema=REJECTED_SCHEMA),
                                 rejected_part_path(self.out_dir, chunk))
        if len(kept):
            write_parquet_atomic(to_shard_table(kept, self.model_name, self.seed), shard_path(self.out_dir, chunk))
        summary["finished"] = time.time()
        write_json_atomic(summary_path(self.out_dir, chunk), summary)
        return summary

    async def _generate(self, todo: pd.DataFrame) -> pd.DataFrame:
        """Return ``todo`` with the engine's generated columns added (empty in, empty out)."""
        if todo.empty:
            return todo.assign(**{c: pd.Series(dtype=object) for c in GENERATED_COLUMNS})
        batch = {c: todo[c].to_numpy() for c in todo.columns}
        out = await self.engine(batch)
        return pd.DataFrame({c: list(v) if isinstance(v, np.ndarray) and v.dtype == object else v
                             for c, v in out.items()})
