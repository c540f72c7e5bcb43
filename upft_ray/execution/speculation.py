"""Stragglers: once every chunk has started, an idle engine re-runs a chunk still running elsewhere.

A run's last chunks can sit on one slow replica (a throttled GPU, a busy node) while the others are
idle: the job waits at 99%. Spare items follow the chunks into the engine pool, so an engine gets one
only when it has room and every chunk has been handed out. A spare picks the chunk that has run
longest on another engine, once it has run at least as long as a typical chunk (the median of the
committed ones), and runs it too; the first commit wins (``ChunkStore.commit``) and the slower attempt
cancels its requests. A chunk is duplicated at most once, and never while it is being isolated for
killing engines (``isolation``).
"""

from __future__ import annotations

import statistics
import time

from upft_ray.execution.isolation import died
from upft_ray.io.chunk_store import ChunkStore, unit_key

WAIT = object()  # a straggler may appear: ask again shortly


def pick_straggler(store: ChunkStore, chunks: dict, actor: str):
    """Return the chunk this actor should duplicate now, WAIT when one may need it soon, or None when no
    chunk can use a duplicate (all committed, duplicated, isolated, or only running on this actor)."""
    committed = store.summaries()
    durations = [s["finished"] - s["started"] for s in committed.values() if s.get("whole", True)]
    typical = statistics.median(durations) if durations else 0.0
    candidates, waiting = [], False
    for chunk in chunks:
        key = unit_key(chunk)
        if key in committed or any(k.startswith(key + ".r") for k in committed):
            continue
        attempts = store.attempts(key)
        if not attempts:
            return None  # not every chunk has started: this spare came early, and is not needed
        if died(attempts) or any(a["kind"] == "speculative" for a in attempts):
            continue
        running = [a for a in attempts if a["status"] == "running" and a["actor"] != actor]
        if not running:
            continue
        age = time.time() - min(a["started"] for a in running)
        if age >= typical:
            candidates.append((age, chunk))
        else:
            waiting = True
    if candidates:
        return max(candidates)[1]
    return WAIT if waiting else None
