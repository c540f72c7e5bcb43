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
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    for field in ("train.zero_stage", "model", "sample.bogus"):
        assert field in out.stderr


def test_cli_names_missing_question_file(tmp_path):
    out = subprocess.run([sys.executable, "-m", "upft_ray.cli", "sample", f"run_dir={tmp_path}",
                          f"sample.questions={tmp_path}/nope.jsonl"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2
    assert f"{tmp_path}/nope.jsonl" in out.stderr


def test_every_field_is_documented():
    assert all(help_text for _, _, help_text in field_docs())


def test_defaults_follow_the_official_code_and_the_quickstart_keeps_its_recorded_settings():
    defaults = load_config(None)
    assert defaults.train.loss_normalization == "example"
    assert (defaults.sample.temperature, defaults.sample.top_p, defaults.sample.top_k) == ("model",) * 3
    # bench/RESULTS.md's runs were made with these; every bundled config must keep them explicitly
    for path in SHIPPED:
        cfg = load_config(path)
        if cfg.model == "smollm2-135m-instruct":
            assert (cfg.sample.temperature, cfg.sample.top_p, cfg.sample.top_k) == (0.6, 1.0, 0), path.name
            if path.name in RECORDED_WITH_TOKEN_AND_EOS:
                assert (cfg.train.loss_normalization, cfg.train.prefix_eos) == ("token", "loss"), path.name
                assert cfg.sample.method == "sft" or cfg.sample.prefix_tokens == 8, path.name


def test_the_quickstart_is_the_collapse_ablation_variant_its_label_names():
    """The quickstart trains what its label says: the named variant of configs/ablation-collapse.yaml (its
    sampling and training settings equal the ablation's centre with that variant's overrides)."""
    import re

    from upft_ray.config.hashing import results_config
    from upft_ray.orchestration.sweep import sweep_runs

    quickstart = load_config(REPO / "configs/quickstart.yaml")
    named = re.search(r"best variant .*?\((\S+):", quickstart.label)
    assert named, f"the quickstart's label names no ablation variant: {quickstart.label!r}"
    runs = sweep_runs(load_config(REPO / "configs/ablation-collapse.yaml"))
    variant = next((c for v, _, c in runs if v == named.group(1)), None)
    assert variant is not None, f"{named.group(1)} is not a variant of configs/ablation-collapse.yaml"
    ours, theirs = results_config(quickstart), results_config(variant)
    for section in ("sample", "train"):
        assert ours[section] == theirs[section], section


# bench/RESULTS.md's runs of these were made with the quickstart's settings of 2026-11-25 (token loss, EOS with
# loss, t = 8); they keep them
RECORDED_WITH_TOKEN_AND_EOS = {"repro-small.yaml", "efficiency-rft16.yaml", "quickstart-sft.yaml"}


def test_number_fields_with_words_take_the_word_or_a_number():
    cfg = load_config(None, ["sample.top_p=model", "sample.top_k=20", "sample.temperature=7e-1",
                             "sample.prefix_tokens=auto"])
    assert (cfg.sample.top_p, cfg.sample.top_k, cfg.sample.temperature, cfg.sample.prefix_tokens) == \
        ("model", 20, 0.7, "auto")
    with pytest.raises(ConfigError) as err:
        load_config(None, ["sample.top_k=auto", "sample.prefix_tokens=model", "sample.top_p=1.5"])
    assert len(err.value.problems) == 3 and "sample.top_p: 1.5 is above the maximum 1.0" in str(err.value)
