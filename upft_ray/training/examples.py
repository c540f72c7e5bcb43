"""The UPFT training set: sample shards -> token ids with a response-only loss mask.

A prefix row trains on its first t sampled tokens, under the prompt that carries the task template
(``sample.task_template``; "" trains prefix rows on the bare question), and then, by
``train.prefix_eos``:

- ``loss`` (the paper's): EOS appended, with loss: the model is taught to stop after t tokens;
- ``no_loss``: EOS appended as input, masked from the loss (``num_masked_tail`` = 1). Nothing
  attends past an example's last token and its prediction has no target, so the gradient equals
  ``none``'s; only the row layout (one more token per example) differs;
- ``none``: no EOS: the prefix is trained as the start of an answer that goes on.

A sampled prefix that ended with the model's own EOS within t tokens is treated the same way (its
EOS follows ``prefix_eos`` too), so under ``none`` no prefix row has an EOS target.

A full row trains on the whole sampled response (ending in EOS when the model stopped by itself; a
response cut by the length limit gets no EOS, so the model is not taught to stop mid-sentence).
Prompt tokens never carry loss. Labels: ``example_labels``.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from upft_ray.config.types import MODEL_CHAT_TEMPLATE
from upft_ray.engine.prompts import render_prompt
from upft_ray.grading import grade_safely
from upft_ray.io.durable import write_parquet_durably
from upft_ray.io.schema import REJECTED_SCHEMA

PREFIX_EOS = ("loss", "no_loss", "none")
IGNORE_INDEX = -100

EXAMPLES_SCHEMA = pa.schema([
    ("question_id", pa.string()),
    ("kind", pa.string()),
    ("input_ids", pa.list_(pa.int32())),
    ("num_prompt_tokens", pa.int64()),    # the first this-many input_ids carry no loss
    ("num_response_tokens", pa.int64()),  # the rest: len(input_ids) - num_prompt_tokens
    ("num_masked_tail", pa.int64()),      # the last this-many carry no loss either (prefix_eos no_loss)
    ("truncated", pa.bool_()),            # cut to max_length
])


def checked_row(row: dict, vocab_size: int) -> tuple[list[dict], list[int]]:
    """Return (chat messages, response token ids) of a sample-shard row. Raises ValueError naming what is
    wrong: a kind other than prefix/full, messages that are not a list of role/content objects, or a token
    id outside the model's vocabulary (which no embedding, and no int32 column, can hold)."""
    if row.get("kind") not in ("prefix", "full"):
        raise ValueError(f"kind {row.get('kind')!r} is neither 'prefix' nor 'full'")
    messages = json.loads(row["train_messages"])
    if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in messages):
        raise ValueError("train_messages is not a non-empty list of {role, content} messages")
    response = [int(t) for t in row["response_token_ids"]]
    outside = [t for t in response if not 0 <= t < vocab_size]
    if outside:
        raise ValueError(f"response token id {outside[0]} is outside the vocabulary (0..{vocab_size - 1})")
    return messages, response


def build_example(tokenizer, row: dict, max_length: int, prefix_tokens: int | None = None,
                  prefix_eos: str = "loss", vocab_size: int | None = None,
                  chat_template: str = MODEL_CHAT_TEMPLATE) -> dict:
    """Return one tokenised training example for a sample-shard row (see module docstring).

    ``prefix_tokens`` cuts a prefix row's response to its first t tokens (the label-filter baseline
    decodes whole solutions; UPFT's own prefix rows are already t tokens long). ``prefix_eos``:
    what a prefix row ends with (PREFIX_EOS). ``vocab_size``: the model's (default: the tokenizer's length).
    ``chat_template``: how the prompt is rendered (the sampler's ``engine.chat_template``).
    Raises ValueError for an unknown ``prefix_eos`` or a row :func:`checked_row` refuses."""
    if prefix_eos not in PREFIX_EOS:
        raise ValueError(f"prefix_eos: {prefix_eos!r} is not one of {list(PREFIX_EOS)}")
    messages, response = checked_row(row, vocab_size or len(tokenizer))
    _, prompt_ids = render_prompt(tokenizer, messages, chat_template)
    eos = tokenizer.eos_token_id
    masked_tail = 0
    if row["kind"] == "prefix":
        if prefix_tokens:
            response = response[:prefix_tokens]
        if response and response[-1] == eos:  # the sample itself stopped within t tokens
            response = response[:-1]
        if prefix_eos != "none":
            response = response + [eos]
            masked_tail = int(prefix_eos == "no_loss")
    elif row["kind"] == "full" and row["finish_reason"] == "stop" and not (response and response[-1] == eos):
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
        "num_masked_tail": 0 if truncated else masked_tail,  # a cut example lost its tail already
        "truncated": truncated,
    }


def loss_tokens(example: dict) -> int:
    """Return how many tokens of an example carry loss (response tokens less a masked tail)."""
    return example["num_response_tokens"] - example.get("num_masked_tail", 0)


def example_labels(example: dict) -> list[int]:
    """Return the example's labels: its input_ids with the prompt and any masked tail set to IGNORE_INDEX
    (the loss shifts them: the token at position i is the target of the logits at i - 1)."""
    ids, p = list(example["input_ids"]), example["num_prompt_tokens"]
    end = len(ids) - example.get("num_masked_tail", 0)
    return [IGNORE_INDEX] * p + ids[p:end] + [IGNORE_INDEX] * (len(ids) - end)


@functools.lru_cache(maxsize=2)
def _tokenizer(model_path: str):
    from transformers import AutoTokenizer  # heavy: loaded in the tokenising tasks only

    return AutoTokenizer.from_pretrained(model_path)


@functools.lru_cache(maxsize=2)
def _vocab_size(model_path: str) -> int:
    """Return how many token ids the model embeds (its config's vocab_size; at least the tokenizer's length)."""
    from transformers import AutoConfig  # heavy: loaded in the tokenising tasks only

    return max(len(_tokenizer(model_path)), int(getattr(AutoConfig.from_pretrained(model_path), "vocab_size", 0) or 0))


def _build_failed(shard: str, number: int, row: dict, err: Exception) -> dict:
    """Return the REJECTED_SCHEMA row of a sampled row whose example could not be built."""
    message = " ".join(str(err).split())[:300]
    return {"source": shard, "line": number, "reason": f"example_build_error: {type(err).__name__}: {message}",
            "raw": json.dumps({"id": str(row.get("question_id", ""))})}


def tokenize_shard(shard: str, out: str, model_path: str, max_length: int, prefix_tokens: int | None = None,
                   correct_only: bool = False, prefix_eos: str = "loss", chat_template: str = MODEL_CHAT_TEMPLATE) -> dict:
    """Write the training examples of one sample shard to ``out`` (EXAMPLES_SCHEMA, shard order); return counts.

    ``correct_only`` (RFT, label filter) grades each sampled solution against the row's gold answer
    and drops the wrong ones (counted as ``incorrect``; an answer whose grading raises is not correct).
    Rows whose prompt alone fills ``max_length`` keep no response token: they are dropped too. A row
    whose example cannot be built (whatever it holds) goes to ``rejected-PART`` beside ``out`` with the
    error (``failed``): rows in = examples + incorrect + no response token + failed. Written durably."""
    tokenizer, vocab_size = _tokenizer(model_path), _vocab_size(model_path)
    columns = ["question_id", "kind", "train_messages", "response_token_ids", "finish_reason", "answer",
               "response_text"]
    rows = pq.read_table(shard, columns=columns).to_pylist()
    examples, failed, incorrect = [], [], 0
    for number, row in enumerate(rows):
        try:
            if correct_only and not grade_safely(row["response_text"], row["answer"]).correct:
                incorrect += 1
                continue
            examples.append(build_example(tokenizer, row, max_length, prefix_tokens, prefix_eos, vocab_size,
                                          chat_template))
        except Exception as err:  # noqa: BLE001 -- one row's failure costs that row only
            failed.append(_build_failed(shard, number, row, err))
    kept = [e for e in examples if loss_tokens(e) > 0]
    write_parquet_durably(pa.Table.from_pylist(kept, schema=EXAMPLES_SCHEMA), Path(out))
    if failed:
        write_parquet_durably(pa.Table.from_pylist(failed, schema=REJECTED_SCHEMA), rejected_part(Path(out)))
    return {"part": Path(out).name, "rows_in": len(rows), "incorrect": incorrect, "examples": len(kept),
            "failed": len(failed)}


def rejected_part(part: Path) -> Path:
    """Return where the rows of example part ``part`` that could not be built are written."""
    return part.with_name(f"rejected-{part.name}")


def tokenize_shards(batch: dict, model_path: str, max_length: int, prefix_tokens: int | None = None,
                    correct_only: bool = False, prefix_eos: str = "loss", chat_template: str = MODEL_CHAT_TEMPLATE) -> dict:
    """Ray Data UDF: tokenise each (shard, out) pair of ``batch``; return one count row per shard."""
    counts = [tokenize_shard(shard, out, model_path, max_length, prefix_tokens, correct_only, prefix_eos, chat_template)
              for shard, out in zip(batch["shard"], batch["out"])]
    return {key: [c[key] for c in counts] for key in ("part", "rows_in", "incorrect", "examples", "failed")}


def example_parts(examples_dir: Path) -> list[Path]:
    """Return the example parts in shard order (the order every training worker indexes)."""
    return sorted(examples_dir.glob("part-*.parquet"))
