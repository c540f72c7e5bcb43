"""The UPFT training set: sample shards -> token ids with a response-only loss mask.

A prefix row trains on its first t sampled tokens followed by EOS, under the prompt that carries
the task template; a full row trains on the whole sampled response (ending in EOS when the model
stopped by itself; a response cut by the length limit gets no EOS, so the model is not taught to
stop mid-sentence). Prompt tokens never carry loss.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pyarrow as pa

from upft_ray.templates import render_prompt

EXAMPLES_SCHEMA = pa.schema([
    ("question_id", pa.string()),
    ("kind", pa.string()),
    ("input_ids", pa.list_(pa.int32())),
    ("num_prompt_tokens", pa.int64()),    # labels are input_ids with the first this-many masked
    ("num_response_tokens", pa.int64()),  # tokens that carry loss ("tokens tuned")
    ("truncated", pa.bool_()),            # cut to max_length
])


def build_example(tokenizer, row: dict, max_length: int, prefix_tokens: int | None = None) -> dict:
    """Return one tokenised training example for a sample-shard row (see module docstring).

    ``prefix_tokens`` cuts a prefix row's response to its first t tokens (the label-filter baseline
    decodes whole solutions; UPFT's own prefix rows are already t tokens long)."""
    _, prompt_ids = render_prompt(tokenizer, json.loads(row["train_messages"]))
    response = [int(t) for t in row["response_token_ids"]]
    if row["kind"] == "prefix" and prefix_tokens:
        response = response[:prefix_tokens]
    eos = tokenizer.eos_token_id
    ends_with_eos = bool(response) and response[-1] == eos
    if row["kind"] == "prefix" and not ends_with_eos:
        response = response + [eos]
    elif row["kind"] == "full" and row["finish_reason"] == "stop" and not ends_with_eos:
        response = response + [eos]  # stopped on a stop string rather than EOS
    ids = prompt_ids + response
    truncated = len(ids) > max_length
    ids = ids[:max_length]
    num_prompt = min(len(prompt_ids), len(ids))
    return {
        "question_id": row["question_id"],
        "kind": row["kind"],
        "input_ids": ids,
        "num_prompt_tokens": num_prompt,
        "num_response_tokens": len(ids) - num_prompt,
        "truncated": truncated,
    }


@functools.lru_cache(maxsize=2)
def _tokenizer(model_path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_path)


def tokenize_shard(shard: str, out: str, model_path: str, max_length: int, prefix_tokens: int | None = None,
                   correct_only: bool = False) -> dict:
    """Write the training examples of one sample shard to ``out`` (EXAMPLES_SCHEMA, shard order); return counts.

    ``correct_only`` (RFT, label filter) grades each sampled solution against the row's gold answer
    and drops the wrong ones (counted as ``incorrect``). Rows whose prompt alone fills ``max_length``
    keep no response token: they are dropped too (rows in = examples + incorrect + no response
    token). The part is written to a temporary name and renamed."""
    import os

    import pyarrow.parquet as pq

    from upft_ray.grading import grade

    tokenizer = _tokenizer(model_path)
    columns = ["question_id", "kind", "train_messages", "response_token_ids", "finish_reason", "answer",
               "response_text"]
    rows = pq.read_table(shard, columns=columns).to_pylist()
    graded = [r for r in rows if grade(r["response_text"], r["answer"])[1]] if correct_only else rows
    examples = [build_example(tokenizer, row, max_length, prefix_tokens) for row in graded]
    kept = [e for e in examples if e["num_response_tokens"] > 0]
    tmp = f"{out}.tmp-{os.getpid()}"
    pq.write_table(pa.Table.from_pylist(kept, schema=EXAMPLES_SCHEMA), tmp)
    os.replace(tmp, out)
    return {"part": Path(out).name, "rows_in": len(rows), "incorrect": len(rows) - len(graded), "examples": len(kept)}


def tokenize_shards(batch: dict, model_path: str, max_length: int, prefix_tokens: int | None = None,
                    correct_only: bool = False) -> dict:
    """Ray Data UDF: tokenise each (shard, out) pair of ``batch``; return one count row per shard."""
    counts = [tokenize_shard(shard, out, model_path, max_length, prefix_tokens, correct_only)
              for shard, out in zip(batch["shard"], batch["out"])]
    return {key: [c[key] for c in counts] for key in ("part", "rows_in", "incorrect", "examples")}


def example_parts(examples_dir: Path) -> list[Path]:
    """Return the example parts in shard order (the order every training worker indexes)."""
    return sorted(examples_dir.glob("part-*.parquet"))
