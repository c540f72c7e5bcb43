"""Which chunk an idle engine duplicates: the one running longest on another engine, once it has run as
long as a typical committed chunk; never one that is committed, already duplicated, being isolated for
killing engines, or running only on this engine."""

from __future__ import annotations

import time

from upft_ray.execution.speculation import WAIT, every_chunk_started, hold_spare, pick_straggler
from upft_ray.io.chunk_store import ChunkStore, new_attempt_id, unit_key


def _committed(store: ChunkStore, chunk: int, seconds: float) -> None:
    now = time.time()
    store.commit(unit_key(chunk), {"started": now - seconds, "finished": now, "whole": True}, None, None,
                 new_attempt_id())


def _running(store: ChunkStore, chunk: int, actor: str, age_s: float, kind: str = "normal") -> dict:
    record = store.start_attempt(unit_key(chunk), kind, "node", actor)
    record["started"] -= age_s
    store.end_attempt(record, "running")
    return record


def test_the_longest_running_chunk_elsewhere_past_a_typical_duration_is_picked(tmp_path):
    store = ChunkStore(tmp_path)
    store.prepare()
    for chunk in range(3):
        _committed(store, chunk, 1.0)
    _running(store, 3, "other", 5.0)
    _running(store, 4, "other", 9.0)
    _running(store, 5, "me", 20.0)
    assert pick_straggler(store, dict.fromkeys(range(6)), "me") == 4


def test_young_chunks_mean_wait_and_nothing_to_help_means_none(tmp_path):
    store = ChunkStore(tmp_path)
    store.prepare()
    _committed(store, 0, 10.0)
    _running(store, 1, "other", 1.0)
    assert pick_straggler(store, dict.fromkeys(range(2)), "me") is WAIT
    _running(store, 1, "me", 30.0, kind="speculative")  # duplicated once already
    assert pick_straggler(store, dict.fromkeys(range(2)), "me") is None


def test_unstarted_dead_and_committed_chunks_are_not_duplicated(tmp_path):
    store = ChunkStore(tmp_path)
    store.prepare()
    _committed(store, 0, 1.0)
    dead = _running(store, 1, "other", 50.0)
    store.end_attempt(dead, "died", "engine died")
    _running(store, 1, "other", 40.0)  # being retried after a death: isolation decides, not speculation
    assert pick_straggler(store, dict.fromkeys(range(2)), "me") is None
    assert pick_straggler(store, dict.fromkeys(range(3)), "me") is None  # chunk 2 not started yet


def test_two_spares_never_duplicate_the_same_chunk(tmp_path):
    store = ChunkStore(tmp_path)
    store.prepare()
    _committed(store, 0, 0.1)
    for chunk in (1, 2):
        _running(store, chunk, "slow", 30.0 + chunk)
    chunks = dict.fromkeys(range(3))
    assert [pick_straggler(store, chunks, "a"), pick_straggler(store, chunks, "b")] == [2, 1]
    assert pick_straggler(store, chunks, "c") is WAIT  # both taken; they may still need no one else


def test_a_spare_is_held_until_every_chunk_has_started(tmp_path):
    store = ChunkStore(tmp_path)
    store.prepare()
    chunks = dict.fromkeys(range(2))
    _committed(store, 0, 0.1)
    assert not every_chunk_started(store, chunks)
    started = time.time()
    hold_spare(store, chunks, limit_s=1.0)  # bounded: gives up rather than hang
    assert 1.0 <= time.time() - started < 3.0
    _running(store, 1, "other", 0.0)
    assert every_chunk_started(store, chunks)
