"""`upft sweep` end to end on the tiny model: variants as runs, base evaluated once, failures reported."""

import json

from conftest import tiny_overrides
from upft_ray import pipeline
from upft_ray.config import load_config


def test_sweep_runs_each_variant_and_seed_and_reports_mean_and_tokens(tmp_path, tiny_model_dir, ray_local):
    cfg = load_config(None, tiny_overrides(tmp_path / "sweep", tiny_model_dir) + [
        "sample.max_questions=8", "eval.max_questions=6", "sweep.seeds=[7]",
        "sweep.variants=[{name: upft}, {name: label, overrides: [sample.method=label_filter]}]"])
    report, failures = pipeline.sweep(cfg)
    text = report.read_text()
    # The random tiny model answers nothing right: the label filter keeps no example and fails, loudly.
    assert set(failures) == {"label-s7"} and "no training example" in failures["label-s7"]
    assert "| upft (1/1 runs) | UPFT |" in text and "| label (0/1 runs) | label filter |" in text
    assert "## Token efficiency" in text and "| label filter | 1 | 8 x 1 |" in text and "## Failed runs" in text
    manifest = json.loads((tmp_path / "sweep" / "upft-s7" / "sample" / "manifest.json").read_text())
    assert manifest["seed"] == 7 and (tmp_path / "sweep" / "upft-s7" / "eval" / "metrics.json").is_file()
    assert (tmp_path / "sweep" / "base" / "eval_base" / "metrics.json").is_file()
    assert not (tmp_path / "sweep" / "upft-s7" / "eval_base").exists()  # the base model is evaluated once
