"""Same code on retry: a run directory records the code that wrote it, and other code on a directory that
holds results is refused like a changed config, unless a person allows it (then the record keeps both)."""

from __future__ import annotations

import json

import pytest

from upft_ray.config import ConfigError
from upft_ray.orchestration import provenance
from upft_ray.orchestration.provenance import ALLOW_ENV, check_code, code_identity


def _other_code(run, **changes):
    record = json.loads((run / "code.json").read_text())
    record["code"].update(changes)
    (run / "code.json").write_text(json.dumps(record))


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.delenv(ALLOW_ENV, raising=False)
    check_code(tmp_path)
    return tmp_path


def test_the_code_is_recorded_and_the_same_code_passes(run):
    record = check_code(run)
    assert record["code"]["source_hash"] == code_identity()["source_hash"] and record["history"] == []
    assert len(record["code"]["source_hash"]) >= 12 and "ray" in record["code"]["versions"]


@pytest.mark.parametrize("result", ["sample/chunks/chunk-000000.json", "eval_base/metrics.json",
                                    "eval/chunks/chunk-000003.r000000-000002.json", "train/run_config.json"])
def test_other_code_on_a_directory_with_results_is_refused_naming_what_changed(run, result):
    (run / result).parent.mkdir(parents=True, exist_ok=True)
    (run / result).write_text("{}")
    _other_code(run, source_hash="0123456789abcdef", version="0.0.9")
    with pytest.raises(ConfigError, match=r"holds results written by other code .*source_hash '0123456789abcdef' ->"):
        check_code(run)
    changed_versions = json.loads((run / "code.json").read_text())
    changed_versions["code"]["source_hash"] = code_identity()["source_hash"]
    changed_versions["code"]["versions"] = {**changed_versions["code"]["versions"], "vllm": "0.1.0"}
    (run / "code.json").write_text(json.dumps(changed_versions))
    with pytest.raises(ConfigError, match="vllm 0.1.0 ->"):
        check_code(run)


def test_a_person_may_allow_it_and_the_record_keeps_the_previous_code(run, monkeypatch):
    (run / "sample").mkdir()
    (run / "sample" / "manifest.json").write_text("{}")
    _other_code(run, source_hash="feedfacefeedface")
    record = check_code(run, allow_change=True)
    assert record["code"]["source_hash"] == code_identity()["source_hash"]
    assert [h["source_hash"] for h in record["history"]] == ["feedfacefeedface"]
    _other_code(run, source_hash="beefbeefbeefbeef")
    monkeypatch.setenv(ALLOW_ENV, "1")
    assert len(check_code(run)["history"]) == 2


def test_other_code_on_a_directory_without_results_just_takes_it_over(run, monkeypatch):
    _other_code(run, source_hash="feedfacefeedface")
    assert check_code(run)["code"]["source_hash"] == code_identity()["source_hash"]
    monkeypatch.setattr(provenance, "source_hash", lambda *a: "changed-since")  # e.g. an edited checkout
    (run / "sample").mkdir()
    (run / "sample" / "manifest.json").write_text("{}")
    with pytest.raises(ConfigError):
        check_code(run)
