"""Stragglers: once every chunk has started, an idle engine re-runs a chunk still running elsewhere.

A run's last chunks can sit on one slow replica (a throttled GPU, a busy node) while the others are
idle: the job waits at 99%. Spare items follow the chunks into the engine pool; the read step holds
each until every chunk has started (:func:`hold_spare`), so an engine gets one only when it has room
and nothing is left to hand out. A spare picks the chunk that has run longest on another engine, once
it has run at least as long as a typical chunk (the median of the committed ones), and runs it too;
the first commit wins (``ChunkStore.commit``) and the slower attempt cancels its requests. A chunk is
duplicated at most once (``ChunkStore.claim_duplicate``), and never while it is being isolated for
killing engines (``isolation``).
"""

from __future__ import annotations

import statistics
import time

from upft_ray.io.chunk_store import ChunkStore, unit_key

WAIT = object()  # a straggler may appear: ask again shortly
SPARE_HOLD_S = 900.0  # a bound, so that no ordering surprise can turn holding a spare into a hang


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
            # Not every chunk has started: this spare came early. It is dropped rather than kept waiting, since
            # it would hold a slot of this actor that a chunk queued behind it may need (with one slot, forever).
            return None
        if _retried_or_duplicated(attempts):
            continue
        running = [a for a in attempts if a["status"] == "running" and a["actor"] != actor]
        if not running:
            continue
        age = time.time() - min(a["started"] for a in running)
        if age >= typical:
            candidates.append((age, chunk))
        else:
            waiting = True
    for _, chunk in sorted(candidates, reverse=True):
        if store.claim_duplicate(unit_key(chunk)):
            return chunk
        waiting = True  # another spare took this one a moment ago
    return WAIT if waiting else None


def every_chunk_started(store: ChunkStore, chunks: dict) -> bool:
    """Return True once every chunk of the run has an attempt or is committed."""
    started = {p.name.removeprefix("chunk-").split(".")[0] for p in (store.out_dir / "attempts").glob("chunk-*")}
    committed = {key.split(".")[0] for key in store.summaries()}
    return all(unit_key(chunk) in started or unit_key(chunk) in committed for chunk in chunks)


def hold_spare(store: ChunkStore, chunks: dict, limit_s: float = SPARE_HOLD_S) -> None:
    """Return once every chunk has started (or after ``limit_s``): a spare that reached an engine before the
    last chunks would find nothing to duplicate and be spent. Spares are read after every chunk (Ray Data
    reads items in order), so holding one in the read step never keeps a chunk from an engine."""
    deadline = time.time() + limit_s
    while time.time() < deadline and not every_chunk_started(store, chunks):
        time.sleep(0.5)


def _retried_or_duplicated(attempts: list[dict]) -> bool:
    """Return True when a chunk's attempts rule out a duplicate: one died (recorded, or a normal attempt
    was started again after one that never ended: isolation decides what runs next), or one is a duplicate."""
    normal = [a for a in attempts if a["kind"] == "normal"]
    return len(normal) > 1 or any(a["status"] == "died" or a["kind"] == "speculative" for a in attempts)
