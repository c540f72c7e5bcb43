"""The chunk store's commit protocol: the first commit of a unit wins and a loser lands nothing; a commit
cut short between its summary and its renames is finished by roll_forward (whatever the host is called);
pending files of attempts that did not commit are dropped; ranges cover a chunk only when contiguous."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from upft_ray.io import chunk_store
from upft_ray.io.chunk_store import ChunkStore, new_attempt_id, unit_key


def _rows(tag: str) -> pa.Table:
    return pa.table({"question_id": [f"{tag}-0", f"{tag}-1"]})


def _store(tmp_path) -> ChunkStore:
    store = ChunkStore(tmp_path / "stage")
    store.prepare()
    return store


def test_the_first_commit_wins_and_the_loser_lands_nothing(tmp_path):
    store = _store(tmp_path)
    assert store.commit("000001", {"by": "a"}, _rows("a"), None, new_attempt_id())
    assert not store.commit("000001", {"by": "b"}, _rows("b"), _rows("b"), new_attempt_id())
    assert store.read_summary("000001")["by"] == "a"
    assert pq.read_table(store.shard_path("000001"))["question_id"].to_pylist() == ["a-0", "a-1"]
    assert not store.rejected_path("000001").exists()
    leftovers = [p.name for p in store.out_dir.rglob("*") if p.is_file() and p.name.startswith(".")]
    assert leftovers == []


@pytest.mark.parametrize("host", ["node-1", "ip-10-0-3-7.ec2.internal", "pod.upft.svc.cluster.local", "h_x"])
def test_a_commit_cut_short_after_its_summary_is_finished_by_roll_forward(tmp_path, monkeypatch, host):
    monkeypatch.setattr(chunk_store.socket, "gethostname", lambda: host)
    store = _store(tmp_path)
    key = unit_key(3, 0, 512)  # a range unit: its key has a dot too
    real_replace = os.replace

    def crash_on_rename(src, dst):
        if str(src).endswith(".pending"):
            raise SystemExit("killed between the summary and the renames")
        return real_replace(src, dst)

    monkeypatch.setattr(chunk_store.os, "replace", crash_on_rename)
    with pytest.raises(SystemExit):
        store.commit(key, {"by": "a"}, _rows("a"), _rows("r"), new_attempt_id())
    monkeypatch.setattr(chunk_store.os, "replace", real_replace)
    assert store.committed(key) and not store.shard_path(key).exists()
    # A loser's pending file (an attempt that never got to its summary) is dropped, not renamed.
    loser = store.shard_path(key).with_name(f".{store.shard_path(key).name}.{new_attempt_id()}.pending")
    pq.write_table(_rows("b"), loser)
    assert store.roll_forward() == 2
    assert pq.read_table(store.shard_path(key))["question_id"].to_pylist() == ["a-0", "a-1"]
    assert pq.read_table(store.rejected_path(key))["question_id"].to_pylist() == ["r-0", "r-1"]
    assert not loser.exists() and not list(store.out_dir.rglob("*.pending"))


def test_attempt_ids_carry_no_dots_whatever_the_host(monkeypatch):
    monkeypatch.setattr(chunk_store.socket, "gethostname", lambda: "a.b.c.example.com")
    ids = {new_attempt_id() for _ in range(100)}
    assert len(ids) == 100 and not any("." in i for i in ids)


def test_ranges_make_a_chunk_only_when_they_cover_it_without_a_gap(tmp_path):
    store = _store(tmp_path)
    for lo, hi in ((0, 2), (3, 4)):
        store.commit(unit_key(7, lo, hi), {}, _rows(f"{lo}"), None, new_attempt_id())
    assert store.chunk_units(7, 4) is None
    store.commit(unit_key(7, 2, 3), {}, _rows("2"), None, new_attempt_id())
    assert store.chunk_units(7, 4) == [unit_key(7, 0, 2), unit_key(7, 2, 3), unit_key(7, 3, 4)]
    assert store.chunk_units(7, 5) is None
    store.commit(unit_key(7), {}, _rows("w"), None, new_attempt_id())
    assert store.chunk_units(7, 4) == [unit_key(7)] and len(store.moot_ranges(7)) == 3


def test_engine_dtypes_are_those_of_the_committed_units_summaries(tmp_path):
    store = _store(tmp_path)
    assert store.engine_dtypes() == []
    for chunk, dtype in ((1, "float32"), (2, "bfloat16"), (3, "float32"), (4, None)):  # 4: a mock engine's
        store.commit(unit_key(chunk), {"engine_dtype": dtype}, _rows(str(chunk)), None, new_attempt_id())
    store.commit(unit_key(5), {}, _rows("5"), None, new_attempt_id())  # written before the field existed
    assert store.engine_dtypes() == ["bfloat16", "float32"]
