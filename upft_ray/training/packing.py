"""Batches of training examples: which examples share a row (packing), and the tensors of a micro-batch.

A *row* is a list of example indices. Without packing every row holds one example (padded to the
longest row of its micro-batch); with packing, short examples (UPFT prefixes are ~t tokens plus a
prompt) share rows of up to ``pack_length`` tokens. Either way a row is fed the same way: position
ids restart at 0 for every example and attention_mask is left out, so transformers builds a
block-diagonal causal mask from the position ids (no example attends to another) on every attention
backend; padding forms its own segment and carries no loss.

The rows of an epoch are a pure function of (seed, epoch): a seeded permutation of the examples,
packed greedily in that order. Resumed runs therefore see exactly the rows an uninterrupted run sees.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

IGNORE_INDEX = -100


@dataclass
class ExampleStore:
    """All training examples as flat arrays (no Python object per token): cheap on memory at 600K rows."""
    tokens: np.ndarray          # every example's input_ids, concatenated
    offsets: np.ndarray         # example i is tokens[offsets[i]:offsets[i+1]]
    num_prompt: np.ndarray      # prompt tokens per example (no loss on them)
    masked_tail: np.ndarray | None = None  # trailing tokens without loss per example (prefix_eos no_loss)

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per example."""
        return np.diff(self.offsets)

    @property
    def tails(self) -> np.ndarray:
        """Trailing tokens per example that carry no loss (zeros when the examples have none)."""
        return self.masked_tail if self.masked_tail is not None else np.zeros(len(self.num_prompt), dtype=np.int64)

    @property
    def loss_tokens(self) -> np.ndarray:
        """Loss-bearing (response) tokens per example."""
        return self.lengths - self.num_prompt - self.tails

    def __len__(self) -> int:
        return len(self.num_prompt)

    @classmethod
    def from_parts(cls, parts: list) -> "ExampleStore":
        """Load example parts (EXAMPLES_SCHEMA), in the order given, into flat arrays (int32 tokens)."""

        def read(part):
            has_tail = "num_masked_tail" in pq.read_schema(part).names  # parts written before it existed: none
            table = pq.read_table(part, columns=["input_ids", "num_prompt_tokens"] + ["num_masked_tail"] * has_tail)
            if not has_tail:
                table = table.append_column("num_masked_tail", pa.array(np.zeros(table.num_rows, dtype=np.int64)))
            return table

        table = pa.concat_tables([read(p) for p in parts])
        ids = table.column("input_ids").combine_chunks()
        offsets = ids.offsets.to_numpy().astype(np.int64)
        tokens = ids.values.to_numpy().astype(np.int32)
        return cls(tokens, offsets - offsets[0], table.column("num_prompt_tokens").to_numpy().astype(np.int64),
                   table.column("num_masked_tail").to_numpy().astype(np.int64))


def epoch_rows(lengths: np.ndarray, seed: int, epoch: int, pack_length: int) -> list[list[int]]:
    """Return the rows of ``epoch``: a seeded permutation of the examples, packed when ``pack_length`` > 0.

    Packing is first fit over a window of the 64 most recent open rows, in permutation order, so
    it is deterministic, near-optimal for short examples, and linear in the number of examples."""
    order = np.random.default_rng(seed + epoch).permutation(len(lengths))
    if pack_length <= 0:
        return [[int(i)] for i in order]
    rows: list[list[int]] = []
    free: list[int] = []  # room left in each open row, parallel to open_rows
    open_rows: list[int] = []
    for i in order:
        need = int(lengths[i])
        for k, room in enumerate(free):
            if need <= room:
                rows[open_rows[k]].append(int(i))
                free[k] -= need
                break
        else:
            rows.append([int(i)])
            open_rows.append(len(rows) - 1)
            free.append(pack_length - need)
            if len(open_rows) > 64:
                open_rows.pop(0)
                free.pop(0)
    return rows


def packing_efficiency(rows: list[list[int]], lengths: np.ndarray, pack_length: int) -> float:
    """Return real tokens / row capacity (``pack_length`` per row) for packed ``rows``."""
    return float(sum(int(lengths[r].sum()) for r in map(np.asarray, rows)) / (len(rows) * pack_length))


def collate_rows(rows: list[list[int]], store: ExampleStore, pad_id: int, width: int | None = None,
                 multiple: int = 1):
    """Return (input_ids, position_ids, labels, example_ids) tensors for a micro-batch of rows.

    ``example_ids`` numbers the examples of the micro-batch per token (-1 on padding), for
    per-example loss normalisation. Rows are right-padded to ``width`` (default: the longest row,
    rounded up to a multiple of ``multiple``); the padding is a segment of its own, without loss."""
    import torch  # heavy: loaded when used

    lengths = [int(store.lengths[r].sum()) for r in map(np.asarray, rows)]
    width = width or -(-max(lengths) // multiple) * multiple
    shape = (len(rows), width)
    input_ids = torch.full(shape, pad_id, dtype=torch.long)
    position_ids = torch.zeros(shape, dtype=torch.long)
    labels = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
    example_ids = torch.full(shape, -1, dtype=torch.long)
    seen = 0
    tails = store.tails
    for b, row in enumerate(rows):
        at = 0
        for i in row:
            ids = torch.from_numpy(store.tokens[store.offsets[i]:store.offsets[i + 1]].astype(np.int64))
            n, p, tail = len(ids), int(store.num_prompt[i]), int(tails[i])
            input_ids[b, at:at + n] = ids
            position_ids[b, at:at + n] = torch.arange(n)
            labels[b, at + max(p, 1):at + n - tail] = ids[max(p, 1):n - tail]  # a segment's first token is never a target
            example_ids[b, at:at + n] = seen
            seen += 1
            at += n
        position_ids[b, at:] = torch.arange(width - at)  # padding: a segment of its own
    return input_ids, position_ids, labels, example_ids
