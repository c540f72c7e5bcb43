"""Token accounting from manifests: the paper's efficiency table, and a sweep's configs and report."""

import json

import pytest

from upft_ray.config import ConfigError, load_config
from upft_ray.config.hashing import results_config
from upft_ray.orchestration.sweep import claim_run, sweep_report, sweep_runs
from upft_ray.reporting.efficiency import efficiency_table, method_means, run_tokens


def _run(root, name, method, questions, samples, sampled, tuned=None, accuracy=None):
    run = root / name
    (run / "sample").mkdir(parents=True)
    (run / "sample" / "manifest.json").write_text(json.dumps({
        "config": {"method": method}, "counts": {"questions_written": questions, "samples_per_question": samples},
        "tokens": {"generated": sampled}}))
    if tuned is not None:
        (run / "train").mkdir()
        (run / "train" / "manifest.json").write_text(json.dumps({"counts": {"tokens_tuned": tuned}}))
    if accuracy is not None:
        (run / "eval").mkdir()
        (run / "eval" / "metrics.json").write_text(json.dumps(
            {"benchmarks": {"arith-eval": {"accuracy": accuracy}}}))
    return run


def test_efficiency_table_ratios_come_from_the_manifests(tmp_path):
    runs = [_run(tmp_path, "upft", "upft", 100, 1, 1_000, 1_500),
            _run(tmp_path, "rft", "rft", 100, 16, 128_000, 12_000),
            _run(tmp_path, "sft", "sft", 100, 1, 8_000, 8_000)]
    table = efficiency_table(runs)
    assert "| UPFT | 1 | 100 x 1 | 1,000 | 1,500 | 0.8% | 12.5% | 12.5% | 18.8% |" in table
    assert "| RFT | 1 | 100 x 16 | 128,000 | 12,000 | 100.0% | 100.0% | 1600.0% | 150.0% |" in table


def test_seeds_are_averaged_and_untrained_runs_have_no_tuned_tokens(tmp_path):
    rows = [run_tokens(_run(tmp_path, f"u{s}", "upft", 10, 1, 100 * s, 10 * s)) for s in (1, 3)]
    rows.append(run_tokens(_run(tmp_path, "l", "label_filter", 10, 1, 500)))
    means = method_means(rows)
    assert means["upft"]["sampled"] == 200 and means["upft"]["tuned"] == 20 and means["upft"]["runs"] == 2
    assert means["label_filter"]["tuned"] is None
    assert run_tokens(tmp_path / "nothing") is None


def test_sweep_expands_variants_by_seeds_with_their_own_run_dirs(tmp_path):
    cfg = load_config(None, [f"run_dir={tmp_path}", "sweep.seeds=[1, 2]",
                             "sweep.variants=[{name: upft}, {name: sft, overrides: [sample.method=sft]}]"])
    runs = sweep_runs(cfg)
    assert [(v, s) for v, s, _ in runs] == [("upft", 1), ("sft", 1), ("upft", 2), ("sft", 2)]
    assert runs[3][2].sample.method == "sft" and runs[3][2].seed == 2
    assert runs[3][2].run_path == tmp_path / "sft-s2" and not runs[0][2].eval.evaluate_base

    _run(tmp_path, "upft-s1", "upft", 10, 1, 100, 100, 0.30)
    _run(tmp_path, "upft-s2", "upft", 10, 1, 100, 100, 0.40)
    _run(tmp_path, "sft-s1", "sft", 10, 1, 900, 900, 0.20)
    for _, _, run_cfg in runs:  # what a sweep writes before a run's first stage
        claim_run(run_cfg.run_path, results_config(run_cfg))
    report = sweep_report(cfg, {"sft-s2": "RuntimeError: boom"})
    assert "| upft | UPFT | 2/2 | 35.0 +- 7.1 [0.0, 98.5] (2 runs) | 35.0 +- 7.1 [0.0, 98.5] (2 runs) |" in report
    assert "| sft | SFT | 1/2 | 20.0 (1 run) | 20.0 (1 run) |" in report
    assert "`sft-s2`: RuntimeError: boom" in report and "## Token efficiency" in report


def test_bad_sweeps_are_config_errors(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(None, ["sweep.seeds=[1, x]", "sweep.variants=[{name: a b}, {name: c, overrides: [nokey]}]"])
    assert "sweep.seeds" in str(err.value) and "sweep.variants[0]" in str(err.value) and "sweep.variants[1]" in str(err.value)
    with pytest.raises(ValueError, match="sweep.variants is empty"):
        sweep_runs(load_config(None, []))
