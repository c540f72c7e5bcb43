"""Configs: every shipped YAML loads; bad configs fail with every problem named."""

import subprocess
import sys

import pytest

from conftest import REPO
from upft_ray.config import ConfigError, PipelineConfig, field_docs, load_config

SHIPPED = sorted((REPO / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_config_loads_and_says_how_to_launch(path):
    cfg = load_config(path)
    assert isinstance(cfg, PipelineConfig)
    assert path.read_text().startswith("#") and "upft " in path.read_text().splitlines()[1]


def test_overrides_set_nested_fields_with_yaml_types():
    cfg = load_config(REPO / "configs/quickstart.yaml", ["sample.prefix_tokens=16", "train.zero_stage=3",
                                                         "sample.engine.dtype=float32", "eval.benchmarks=[a.jsonl]",
                                                         "train.learning_rate=5e-6"])
    assert (cfg.sample.prefix_tokens, cfg.train.zero_stage, cfg.sample.engine.dtype) == (16, 3, "float32")
    assert cfg.eval.benchmarks == ["a.jsonl"] and cfg.train.learning_rate == 5e-6


def test_bad_config_lists_every_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: /no/such/model\nbogus: 1\nsample:\n  prefix_tokens: eight\n  structure_ratio: 1.5\n"
                   "train:\n  zero_stage: 4\n  learning_rate: fast\n  nope: 2\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    text = str(err.value)
    for field in ("model", "bogus", "sample.prefix_tokens", "sample.structure_ratio", "train.zero_stage",
                  "train.learning_rate", "train.nope"):
        assert f"{field}:" in text
    assert len(err.value.problems) == 7


def test_missing_config_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_config(tmp_path / "missing.yaml")


def test_cli_exits_nonzero_naming_bad_fields(tmp_path):
    out = subprocess.run([sys.executable, "-m", "upft_ray.cli", "run", "-c", str(REPO / "configs/quickstart.yaml"),
                          "train.zero_stage=7", "model=/no/such", "sample.bogus=1"],
                         capture_output=True, text=True)
    assert out.returncode == 2
    for field in ("train.zero_stage", "model", "sample.bogus"):
        assert field in out.stderr


def test_cli_names_missing_question_file(tmp_path):
    out = subprocess.run([sys.executable, "-m", "upft_ray.cli", "sample", f"run_dir={tmp_path}",
                          f"sample.questions={tmp_path}/nope.jsonl"], capture_output=True, text=True)
    assert out.returncode == 2
    assert f"{tmp_path}/nope.jsonl" in out.stderr


def test_every_field_is_documented():
    assert all(help_text for _, _, help_text in field_docs())
