"""Checks that can run before Ray starts do: an unusable model, run directory or question file is
one message per problem and exit 2, with Ray never started, and nothing is left behind that would
stop the corrected command."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import REPO
from typer.testing import CliRunner

from upft_ray.cli import app


@pytest.fixture
def no_ray(monkeypatch):
    """Fail the test if a command gets as far as starting Ray."""
    def ray_session(_cfg):
        raise AssertionError("Ray was started before the inputs were checked")

    monkeypatch.setattr("upft_ray.orchestration.stages.ray_session", ray_session)


def _invoke(*args):
    return CliRunner().invoke(app, list(args))


def _expect_exit_2(result, *words):
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    for word in words:
        assert word in result.output, (word, result.output)


def _questions(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"id": "a", "question": "What is 1 + 1?", "answer": "2"}) + "\n")
    return str(path)


def test_run_dir_that_is_a_file(tmp_path, no_ray):
    run_dir = tmp_path / "run"
    run_dir.write_text("not a directory")
    _expect_exit_2(_invoke("sample", f"run_dir={run_dir}", f"sample.questions={_questions(tmp_path)}"),
                   "run_dir", str(run_dir))
    assert run_dir.read_text() == "not a directory"


def test_run_dir_whose_parent_is_a_file(tmp_path, no_ray):
    parent = tmp_path / "file"
    parent.write_text("x")
    _expect_exit_2(_invoke("sample", f"run_dir={parent}/run", f"sample.questions={_questions(tmp_path)}"), "run_dir")


@pytest.mark.parametrize("run_dir", ["/proc/upft-run", "/sys/upft/run"])
def test_run_dir_that_cannot_be_created(tmp_path, no_ray, run_dir):
    # /proc and /sys refuse new directories even to root (tests here may run as root, which
    # ignores file modes, so a chmod-ed directory would not test anything).
    _expect_exit_2(_invoke("sample", f"run_dir={run_dir}", f"sample.questions={_questions(tmp_path)}"), "run_dir")


@pytest.mark.parametrize("command", ["sample", "run", "train", "evaluate"])
def test_hub_model_that_cannot_be_resolved(tmp_path, no_ray, monkeypatch, command):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = _invoke(command, f"run_dir={tmp_path / 'run'}", "model=no-such-org/no-such-model-xyz",
                     f"sample.questions={_questions(tmp_path)}")
    _expect_exit_2(result, "model", "no-such-org/no-such-model-xyz")
    assert not (tmp_path / "run").exists()


def test_hub_model_without_network_fails_fast(tmp_path, no_ray, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: like no network
    _expect_exit_2(_invoke("sample", f"run_dir={tmp_path / 'run'}", "model=no-such-org/no-such-model-xyz",
                           f"sample.questions={_questions(tmp_path)}"), "model")


def test_evaluate_a_checkpoint_that_does_not_exist(tmp_path, no_ray):
    _expect_exit_2(_invoke("evaluate", f"run_dir={tmp_path / 'run'}", "--model", str(tmp_path / "nope")), "nope")


def test_a_judge_model_that_cannot_be_resolved(tmp_path, no_ray, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _expect_exit_2(_invoke("evaluate", f"run_dir={tmp_path / 'run'}", "eval.judge.model=no-such-org/no-judge-xyz"),
                   "eval.judge.model", "no-such-org/no-judge-xyz")


def test_train_before_sampling(tmp_path, no_ray):
    _expect_exit_2(_invoke("train", f"run_dir={tmp_path / 'run'}"), "upft sample")


def _bad_sources(tmp_path):
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 but not parquet")
    wrong = tmp_path / "wrong.parquet"
    pq.write_table(pa.table({"problem": ["1+1?"]}), wrong)
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    tsv = tmp_path / "q.tsv"  # an unsupported type (CSV is read: GPQA's release is one)
    tsv.write_text("question\tanswer\n1+1?\t2\n")
    folder_named_jsonl = tmp_path / "dir.jsonl"
    folder_named_jsonl.mkdir()
    (folder_named_jsonl / "notes.txt").write_text("x")
    (tmp_path / "problems.jsonl").write_text(json.dumps({"problem": "1+1?", "answer": "2"}) + "\n")
    (tmp_path / "array.json").write_text(json.dumps([{"question": "1+1?"}, {"question": "2+2?"}], indent=2))
    (tmp_path / "empty.jsonl").write_bytes(b"")
    pq.write_table(pa.table({"question": pa.array([], pa.string())}), tmp_path / "empty.parquet")
    return {"wrong-question-field": str(tmp_path / "problems.jsonl"), "json-array": str(tmp_path / "array.json"),
            "empty-jsonl": str(tmp_path / "empty.jsonl"), "empty-parquet": str(tmp_path / "empty.parquet"),
            "missing": str(tmp_path / "nope.jsonl"), "broken-parquet": str(broken),
            "no-question-column": str(wrong), "empty-directory": str(empty_dir), "tsv": str(tsv),
            "glob-without-match": f"{tmp_path}/nothing-*.jsonl", "directory-named-jsonl": str(folder_named_jsonl),
            "unknown-bundled-set": "bundled:no-such-set"}


BAD_SOURCES = ["wrong-question-field", "json-array", "empty-jsonl", "empty-parquet", "missing", "broken-parquet",
               "no-question-column", "empty-directory", "tsv", "glob-without-match", "directory-named-jsonl",
               "unknown-bundled-set"]


@pytest.mark.parametrize("case", BAD_SOURCES)
@pytest.mark.parametrize("command", ["sample", "run"])
def test_question_files_that_cannot_be_read(tmp_path, no_ray, case, command):
    source = _bad_sources(tmp_path)[case]
    _expect_exit_2(_invoke(command, f"run_dir={tmp_path / 'run'}", f"sample.questions={source}"),
                   "sample.questions")


def test_every_problem_is_reported_at_once(tmp_path, no_ray, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run_dir = tmp_path / "run"
    run_dir.write_text("x")
    result = _invoke("sample", f"run_dir={run_dir}", "model=no-such-org/no-such-model-xyz",
                     f"sample.questions={tmp_path / 'nope.jsonl'}")
    _expect_exit_2(result, "run_dir", "model", "sample.questions")


def test_job_entry_point_checks_every_config_before_running(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(f"run_dir: {tmp_path / 'run1'}\nsample:\n  questions: {_questions(tmp_path)}\n")
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing\n")
    out = subprocess.run([sys.executable, str(REPO / "jobs/upft_pipeline.py"), "--config", str(good), "--config",
                          str(empty), "--stage", "sample"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 2 and "empty.yaml" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "run1" / "sample").exists()
    missing = tmp_path / "missing.yaml"
    missing.write_text(f"run_dir: {tmp_path / 'run2'}\nsample:\n  questions: {tmp_path / 'nope.jsonl'}\n")
    out = subprocess.run([sys.executable, str(REPO / "jobs/upft_pipeline.py"), "--config", str(good), "--config",
                          str(missing), "--stage", "sample"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 2 and "nope.jsonl" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "run1" / "sample").exists()


def test_run_dir_name_too_long(tmp_path, no_ray):
    _expect_exit_2(_invoke("sample", f"run_dir={tmp_path / ('r' * 5000)}", f"sample.questions={_questions(tmp_path)}"),
                   "run_dir")


def test_real_cli_fails_before_ray_in_seconds(tmp_path):
    """The real command, not in-process: exit 2 with one line per problem, before any Ray output."""
    import time

    run_dir = tmp_path / "run"
    run_dir.write_text("x")
    started = time.time()
    out = subprocess.run([sys.executable, "-m", "upft_ray.cli", "run", f"run_dir={run_dir}",
                          "model=no-such-org/no-such-model-xyz", f"sample.questions={tmp_path / 'nope.parquet'}"],
                         capture_output=True, text=True, timeout=120, cwd=REPO, env={**__import__("os").environ,
                                                                                      "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 2 and "Traceback" not in out.stderr and "Ray" not in out.stderr + out.stdout
    lines = [line for line in out.stderr.splitlines() if line.startswith("  - ")]
    assert [line.split(":")[0] for line in lines] == ["  - model", "  - sample.questions", "  - run_dir"]
    assert time.time() - started < 60
