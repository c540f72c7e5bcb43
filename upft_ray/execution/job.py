"""A chunked stage as data: where it writes, its chunks, and the stage's own read and finish steps.

Sampling and evaluation differ only in how a chunk's requests are built (``read``) and how generated
rows become the unit's output (``finish``); everything else (attempts, commits, isolation of poison
rows, speculative re-issue, the engine pool) is ``upft_ray.execution``'s, written once.

``read(spec, context) -> DataFrame``: one row per request, with ``record`` (the record's index in its
chunk, 0..records-1), ``reject_reason`` ("" for a usable record; a rejected record has one row with
its reason and the ``source``/``number``/``raw`` of a rejected row) and the engine's request columns.

``finish(rows, context) -> (rows table or None, rejected rows, counts)``: ``rows`` are one unit's
request rows with the engine's generated columns (rejected records have empty ones); ``counts`` must
hold ``records`` (records of the unit), ``kept`` and ``rejected`` with kept + rejected == records.
Both must be module-level functions (they travel to Ray workers by reference).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class ChunkJob:
    """What the workers of one chunked stage need: out_dir, {chunk index: (spec, records)}, the steps."""
    out_dir: str
    chunks: dict[int, tuple[Any, int]]
    read: Callable
    finish: Callable
    context: Any = None
    stage: str = "stage"  # for log lines: "sample", "eval:base", ...
    extra: dict = field(default_factory=dict)  # fields every summary carries (e.g. the model)
