"""The UPFT training set: sample shards -> token ids with a response-only loss mask.

A prefix row trains on its first t sampled tokens followed by EOS, under the prompt that carries
the task template; a full row trains on the whole sampled response (ending in EOS when the model
stopped by itself; a response cut by the length limit gets no EOS, so the model is not taught to
stop mid-sentence). Prompt tokens never carry loss.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa

from upft_ray.templates import render_prompt

EXAMPLES_SCHEMA = pa.schema([
    ("question_id", pa.string()),
    ("kind", pa.string()),
    ("input_ids", pa.list_(pa.int64())),
    ("num_prompt_tokens", pa.int64()),    # labels are input_ids with the first this-many masked
    ("num_response_tokens", pa.int64()),  # tokens that carry loss ("tokens tuned")
    ("truncated", pa.bool_()),            # cut to max_length
])


def build_example(tokenizer, row: dict, max_length: int) -> dict:
    """Return one tokenised training example for a sample-shard row (see module docstring)."""
    _, prompt_ids = render_prompt(tokenizer, json.loads(row["train_messages"]))
    response = [int(t) for t in row["response_token_ids"]]
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


def build_examples(shards_dir: Path, tokenizer, max_length: int) -> pa.Table:
    """Return the training examples (EXAMPLES_SCHEMA) for every row in the sample shards.

    A row whose prompt alone fills ``max_length`` keeps no response token (``num_response_tokens``
    is 0); the caller drops and counts those (rows in = examples + dropped)."""
    import pyarrow.parquet as pq

    columns = ["question_id", "kind", "train_messages", "response_token_ids", "finish_reason"]
    rows = pq.read_table(shards_dir, columns=columns).to_pylist()
    examples = [build_example(tokenizer, row, max_length) for row in rows]
    return pa.Table.from_pylist(examples, schema=EXAMPLES_SCHEMA)
