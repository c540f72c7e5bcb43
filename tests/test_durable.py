"""Durable commits: the file is fsynced before its rename, its directory after; fenced commits do not land.

``os.fsync`` is wrapped (not replaced: the real fsync still runs) to record which path each call
flushed, beside real writes whose results are read back."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pytest

from upft_ray import durable
from upft_ray.run_lease import ENV, Fenced, claim_path
from upft_ray.sampling.chunk_sampler import write_parquet_atomic
from upft_ray.schema import read_json, write_json_atomic


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
    write_parquet_atomic(pa.table({"x": [1, 2, 3]}), target)
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
    for epoch in (1, 2):  # epoch 2 (another attempt) claimed the run after ours
        claim_path(run / ".lease", epoch).parent.mkdir(parents=True, exist_ok=True)
        claim_path(run / ".lease", epoch).write_text("{}")
    monkeypatch.setenv(ENV, json.dumps({"run_dir": str(run), "epoch": 1, "pid": -1}))
    target = run / "sample" / "manifest.json"
    with pytest.raises(Fenced, match="epoch 1 .* to 2"):
        write_json_atomic(target, {"rows": 1})
    assert not target.exists() and list(target.parent.iterdir()) == []  # nor a temp file
    with pytest.raises(Fenced):
        write_parquet_atomic(pa.table({"x": [1]}), run / "sample" / "shards" / "shard-000000.parquet")
    assert list((run / "sample" / "shards").iterdir()) == []
    write_json_atomic(tmp_path / "elsewhere.json", {"ok": 1})  # outside the leased run: not fenced
    monkeypatch.setenv(ENV, json.dumps({"run_dir": str(run), "epoch": 2, "pid": -1}))
    write_json_atomic(target, {"rows": 1})  # the current holder commits
    assert read_json(target) == {"rows": 1}


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
