"""Durable commits: the file is fsynced before its rename, its directory after; fenced commits do not land.

``os.fsync`` is wrapped (not replaced: the real fsync still runs) to record which path each call
flushed, beside real writes whose results are read back."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pytest

from upft_ray.io import durable
from upft_ray.io.claims import claim_path
from upft_ray.io.fencing import ENV, Fenced
from upft_ray.io.manifests import read_json, write_json_atomic


@pytest.fixture
def journal(monkeypatch):
    """Record ("fsync", path) and ("replace"/"rename", src, dst) in call order."""
    events: list[tuple] = []
    real_fsync, real_replace, real_rename = os.fsync, os.replace, Path.rename

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst, **kw):
        events.append(("replace", str(src), str(dst)))
        return real_replace(src, dst, **kw)

    def rename(self, target):
        events.append(("rename", str(self), str(target)))
        return real_rename(self, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(Path, "rename", rename)
    return events


def assert_durable_commit(events: list[tuple], target: Path) -> None:
    """The temp file was fsynced before it was renamed to ``target``, and target's directory after."""
    moves = [i for i, e in enumerate(events) if e[0] in ("replace", "rename") and e[2] == str(target)]
    assert len(moves) == 1, events
    i = moves[0]
    tmp = events[i][1]
    assert ("fsync", tmp) in events[:i], f"{tmp} not fsynced before its rename: {events}"
    assert ("fsync", str(target.parent)) in events[i + 1:], f"{target.parent} not fsynced after the rename: {events}"


def test_json_commit_is_fsynced_file_then_directory(tmp_path, journal):
    target = tmp_path / "sample" / "chunks" / "chunk-000000.json"
    write_json_atomic(target, {"chunk": 0, "rows": 3})
    assert read_json(target) == {"chunk": 0, "rows": 3}
    assert_durable_commit(journal, target)
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # no temp file left


def test_shard_commit_is_fsynced(tmp_path, journal):
    import pyarrow.parquet as pq

    target = tmp_path / "shards" / "shard-000001.parquet"
    durable.write_parquet_durably(pa.table({"x": [1, 2, 3]}), target)
    assert pq.read_table(target).column("x").to_pylist() == [1, 2, 3]
    assert_durable_commit(journal, target)


def test_checkpoint_marker_and_directory_commit_are_fsynced(tmp_path, journal):
    # harness_torch commits latest.json with write_text_durably after fsync_tree of the step directory;
    # the HF export is committed with commit_dir.
    step = tmp_path / "ckpt" / "step_00000003"
    (step / "global_step3").mkdir(parents=True)
    (step / "global_step3" / "model.pt").write_bytes(b"weights")
    (step / "upft_state.json").write_text("{}")
    durable.fsync_tree(step)
    flushed = {e[1] for e in journal if e[0] == "fsync"}
    assert {str(step / "global_step3" / "model.pt"), str(step / "upft_state.json"), str(step / "global_step3"),
            str(step)} <= flushed
    durable.write_text_durably(tmp_path / "ckpt" / "latest.json", json.dumps({"dir": step.name}))
    assert_durable_commit(journal, tmp_path / "ckpt" / "latest.json")
    staging = tmp_path / ".final.staging"
    staging.mkdir()
    (staging / "model.safetensors").write_bytes(b"st")
    durable.commit_dir(staging, tmp_path / "final")
    assert ("fsync", str(staging / "model.safetensors")) in journal
    assert_durable_commit(journal, tmp_path / "final")
    assert (tmp_path / "final" / "model.safetensors").read_bytes() == b"st"


def test_fenced_commit_does_not_land(tmp_path, monkeypatch):
    run = tmp_path / "run"
    for epoch in (1, 2):  # epoch 2 (another attempt) claimed the run after ours, and moved our staging away
        claim_path(run / ".lease", epoch).parent.mkdir(parents=True, exist_ok=True)
        claim_path(run / ".lease", epoch).write_text("{}")
    (run / ".staging" / "epoch-00000002").mkdir(parents=True)
    monkeypatch.setenv(ENV, json.dumps({"run_dir": str(run), "epoch": 1, "pid": -1}))
    target = run / "sample" / "manifest.json"
    with pytest.raises(Fenced, match="epoch 1 .* to 2"):
        write_json_atomic(target, {"rows": 1})
    with pytest.raises(Fenced):
        durable.write_parquet_durably(pa.table({"x": [1]}), run / "sample" / "shards" / "shard-000000.parquet")
    with pytest.raises(Fenced):
        durable.remove_path(run / ".lease")  # a fenced attempt deletes nothing either
    assert not (run / "sample").exists() and (run / ".lease").is_dir()
    write_json_atomic(tmp_path / "elsewhere.json", {"ok": 1})  # outside the leased run: not fenced
    monkeypatch.setenv(ENV, json.dumps({"run_dir": str(run), "epoch": 2, "pid": -1}))
    write_json_atomic(target, {"rows": 1})  # the current holder commits, through its staging directory
    assert read_json(target) == {"rows": 1} and list((run / ".staging" / "epoch-00000002").iterdir()) == []


def test_new_directories_are_fsynced_into_their_parents(tmp_path, journal):
    made = durable.make_dirs(tmp_path / "a" / "b" / "c")
    assert made == tmp_path / "a" / "b" / "c" and made.is_dir()
    flushed = [e[1] for e in journal if e[0] == "fsync"]
    assert flushed == [str(tmp_path), str(tmp_path / "a"), str(tmp_path / "a" / "b")]


def test_temporary_names_are_unique_per_attempt(tmp_path):
    names = {durable.temp_path(tmp_path / "manifest.json").name for _ in range(50)}
    assert len(names) == 50
    assert all(n.startswith(".manifest.json.tmp-") and f"-{os.getpid()}-" in n for n in names)


def test_first_commit_wins_and_the_loser_leaves_nothing(tmp_path):
    target = tmp_path / "chunks" / "chunk-000001.json"
    first, second = durable.temp_path(target), durable.temp_path(target)
    first.write_text("first")
    second.write_text("second")
    assert durable.commit_new_file(first, target) is True
    assert durable.commit_new_file(second, target) is False
    assert target.read_text() == "first" and sorted(p.name for p in target.parent.iterdir()) == [target.name]


def test_orphan_temps_of_every_writer_are_removed_and_committed_files_kept(tmp_path):
    shards, chunks = tmp_path / "shards", tmp_path / "chunks"
    shards.mkdir(), chunks.mkdir()
    (shards / "shard-000001.parquet").write_bytes(b"committed")
    (shards / ".shard-000013.parquet.tmp-22436").write_bytes(b"half")  # write_parquet_durably's name
    (chunks / "chunk-000001.json").write_text("{}")
    (chunks / ".chunk-000013.json.k3x9_q").write_text("{")  # write_json_atomic's mkstemp name
    (chunks / ".staging").mkdir()  # a directory is never taken for a file
    assert durable.remove_orphan_temps([shards, chunks, tmp_path / "missing"]) == 2
    assert sorted(p.name for p in shards.iterdir()) == ["shard-000001.parquet"]
    assert sorted(p.name for p in chunks.iterdir()) == [".staging", "chunk-000001.json"]
