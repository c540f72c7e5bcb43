"""`upft sweep` end to end on the tiny model: variants as runs, base evaluated once, failures reported."""

import json
import time

import pytest
from conftest import tiny_overrides

from upft_ray.config import load_config
from upft_ray.orchestration import stages as pipeline


@pytest.mark.slow  # minutes of engine or trainer starts; the default suite stays under ~25 min
def test_sweep_runs_each_variant_and_seed_and_reports_mean_and_tokens(tmp_path, tiny_model_dir, ray_local):
    cfg = load_config(None, tiny_overrides(tmp_path / "sweep", tiny_model_dir) + [
        "sample.max_questions=8", "eval.max_questions=6", "sweep.seeds=[7]",
        "sweep.variants=[{name: upft}, {name: label, overrides: [sample.method=label_filter]}]"])
    report, failures = pipeline.sweep(cfg)
    text = report.read_text()
    # The random tiny model answers nothing right: the label filter keeps no example and fails, loudly.
    assert set(failures) == {"label-s7"} and "no training example" in failures["label-s7"]
    assert "| upft | UPFT | 1/1 |" in text and "| label | label filter | 0/1 | - |" in text
    assert "## Token efficiency" in text and "| label filter | 1 | 8 x 1 |" in text and "## Failed or refused runs" in text
    manifest = json.loads((tmp_path / "sweep" / "upft-s7" / "sample" / "manifest.json").read_text())
    assert manifest["seed"] == 7 and (tmp_path / "sweep" / "upft-s7" / "eval" / "metrics.json").is_file()
    assert (tmp_path / "sweep" / "base" / "eval_base" / "metrics.json").is_file()
    assert not (tmp_path / "sweep" / "upft-s7" / "eval_base").exists()  # the base model is evaluated once
    # a finished run keeps its exported weights, not its training checkpoints (sweep.keep_checkpoints=false)
    assert (tmp_path / "sweep" / "upft-s7" / "train" / "final" / "config.json").is_file()
    assert not (tmp_path / "sweep" / "upft-s7" / "train" / "ray").exists()


# --- Stale and failed work (no Ray: every run below is done or refused before Ray would start) ---------

import math  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from conftest import REPO  # noqa: E402

from upft_ray.config.hashing import base_results_config, results_config  # noqa: E402
from upft_ray.io.schema import EVAL_SCHEMA  # noqa: E402
from upft_ray.orchestration.sweep import _differences, claim_run, run_state, sweep_runs  # noqa: E402

SWEEP_YAML = """# test sweep
# upft sweep -c this.yaml
run_dir: {run}
eval:
  benchmarks: [bundled:arith-eval]
sweep:
  seeds: [1, 2]
  variants:
    - name: upft
    - name: sft
      overrides: [sample.method=sft]
"""


def _finished(eval_dir, right):
    """Write a finished evaluation of 20 arith-eval questions, right on the first ``right`` of them."""
    eval_dir.mkdir(parents=True)
    correct = [i < right for i in range(20)]
    pq.write_table(pa.Table.from_pydict({
        "benchmark": ["arith-eval"] * 20, "question_id": [f"q{i}" for i in range(20)], "sample_index": [0] * 20,
        "question": ["?"] * 20, "prompt": ["?"] * 20, "output": ["x"] * 20, "extracted_answer": ["1"] * 20,
        "gold": ["1"] * 20, "correct": correct, "num_output_tokens": [9] * 20, "finish_reason": ["stop"] * 20,
        "grade_status": ["ok"] * 20, "grade_error": [""] * 20},
        schema=EVAL_SCHEMA), eval_dir / "arith-eval.parquet")
    (eval_dir / "metrics.json").write_text(json.dumps({"benchmarks": {"arith-eval": {
        "accuracy": right / 20, "correct": right, "graded": 20}}}))


def _sweep(tmp_path, right, stale=()):
    """A sweep whose base and runs are finished (``right``: run -> questions right); ``stale`` runs were
    made with another learning rate."""
    config = tmp_path / "sweep.yaml"
    config.write_text(SWEEP_YAML.format(run=tmp_path / "sweep"))
    cfg = load_config(config)
    claim_run(cfg.run_path / "base", base_results_config(cfg))
    _finished(cfg.run_path / "base" / "eval_base", right["base"])
    for variant, seed, run_cfg in sweep_runs(cfg):
        name = f"{variant}-s{seed}"
        made_by = load_config(config, ["train.learning_rate=2e-5"]) if name in stale else cfg
        claim_run(run_cfg.run_path, results_config([c for v, s, c in sweep_runs(made_by) if (v, s) == (variant, seed)][0]))
        _finished(run_cfg.run_path / "eval", right[name])
    return config, cfg


RIGHT = {"base": 10, "upft-s1": 6, "upft-s2": 8, "sft-s1": 10, "sft-s2": 13}


def test_finished_runs_are_reused_and_reported_with_intervals_and_paired_tests(tmp_path):
    config, cfg = _sweep(tmp_path, RIGHT)
    # Where Ray runs and how engines are placed do not change results: the runs still count as done.
    moved = load_config(config, ["ray.num_cpus=8", "eval.engine.num_replicas=2", "train.log_every_steps=5"])
    report, failures = pipeline.sweep(moved)
    assert failures == {} and pipeline.exit_code((report, failures)) == 0
    text = report.read_text()
    assert "| base | - | 1 | 50.0 (10/20) [29.9, 70.1] | 50.0 |" in text
    # upft: 30 and 40 -> mean 35, std 7.07; t_{0.975,1} = 12.706 -> half width 12.706 * 7.071 / sqrt 2 = 63.5 (clipped).
    assert "| upft | UPFT | 2/2 | 35.0 +- 7.1 [0.0, 98.5] (2 runs) |" in text
    # vs base: -20 and -10 points -> t = 15 / 5 = 3 with 1 df: p = 1 - 2 atan(3) / pi = 0.205.
    p = 1 - 2 * math.atan(3) / math.pi
    assert f"| upft | base | arith-eval | -15.0 +- 7.1 [-78.5, +48.5] (2 runs) | {p:.3f} | within noise | 0 / 0 / 2 |" in text
    # vs SFT of the same seed: -20 and -25 points.
    assert "| upft | SFT (sft) | arith-eval | -22.5 +- 3.5 [" in text
    # every run, paired: upft-s1 vs base has 4 discordant rows, all the base's: p = 2 / 2^4 = 0.125.
    assert "| upft-s1 | base | arith-eval | 20 | 30.0 | 50.0 | -20.0 |" in text and "| 0 / 4 | 0.125 | within noise |" in text


def test_a_run_dir_of_another_config_is_refused_not_reported(tmp_path):
    config, cfg = _sweep(tmp_path, {**RIGHT, "upft-s2": 20}, stale={"upft-s2"})
    report, failures = pipeline.sweep(cfg)
    assert set(failures) == {"upft-s2"} and "train.learning_rate (2e-05 -> 1e-05)" in failures["upft-s2"]
    assert pipeline.exit_code((report, failures)) == 1
    text = report.read_text()
    assert "| upft | UPFT | 1/2 | 30.0 (1 run) |" in text
    assert "(20/20)" not in text and "| upft-s2 |" not in text  # the stale 20/20 is in no table
    assert "## Failed or refused runs" in text and "`upft-s2`" in text


def test_results_without_a_record_are_refused(tmp_path):
    config, cfg = _sweep(tmp_path, RIGHT)
    run = cfg.run_path / "sft-s1"
    (run / "sweep_run.json").unlink()
    state, why = run_state(run, results_config(sweep_runs(cfg)[1][2]), run / "eval" / "metrics.json")
    assert state == "stale" and "without a sweep record" in why
    fresh = tmp_path / "fresh"
    assert run_state(fresh, {}, fresh / "eval" / "metrics.json") == ("todo", None)
    claim_run(fresh, {"a": 1})  # claimed, not finished: resumed, not refused
    assert run_state(fresh, {"a": 1}, fresh / "eval" / "metrics.json") == ("todo", None)


def test_ray_job_entry_point_exits_non_zero_when_a_sweep_run_is_refused(tmp_path):
    config, _ = _sweep(tmp_path, RIGHT, stale={"sft-s1"})
    out = subprocess.run([sys.executable, "jobs/upft_pipeline.py", "--config", str(config), "--stage", "sweep"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stderr[-2000:]
    assert "1 run(s) failed or refused: sft-s1" in out.stderr and "# Sweep: sweep" in out.stdout


def test_the_collapse_ablation_varies_one_knob_at_a_time_on_a_large_held_out_set():
    from upft_ray.io.bundled_data import generate

    cfg = load_config(REPO / "configs" / "ablation-collapse.yaml")
    runs = sweep_runs(cfg)
    assert len(cfg.sweep.seeds) >= 3 and len(runs) == len(cfg.sweep.seeds) * len(cfg.sweep.variants)
    centre = results_config(next(c for v, s, c in runs if v == "paper" and s == cfg.sweep.seeds[0]))
    changed = {}
    for variant, seed, run_cfg in runs:
        if seed == cfg.sweep.seeds[0] and variant != "paper":
            changed[variant] = [d.split(" ")[0] for d in _differences(centre, results_config(run_cfg))]
    assert all(len(keys) == 1 for keys in changed.values()), changed  # exactly one knob per variant
    assert {k[0] for k in changed.values()} >= {"train.prefix_eos", "sample.task_template", "train.loss_normalization",
                                                 "sample.structure_ratio", "sample.prefix_tokens", "train.learning_rate",
                                                 "train.epochs", "sample.method"}
    no_template = next(c for v, _, c in runs if v == "no-template")
    assert no_template.sample.task_template == ""
    assert cfg.eval.benchmarks == ["bundled:arith-heldout"]
    heldout = {r["question"] for r in generate("arith-heldout")}
    assert len(heldout) >= 500 and not heldout & {r["question"] for r in generate("arith-train")}


def test_prune_checkpoints_deletes_train_ray_only(tmp_path):
    from upft_ray.orchestration.sweep import prune_checkpoints

    config = tmp_path / "sweep.yaml"
    config.write_text(SWEEP_YAML.format(run=tmp_path / "sweep"))
    cfg = load_config(config)
    assert cfg.sweep.keep_checkpoints is False
    run_cfg = sweep_runs(cfg)[0][2]
    train = run_cfg.run_path / "train"
    step = train / "ray" / "upft-train" / "checkpoint_x" / "step_00000041"
    step.mkdir(parents=True)
    (step / "optim_states.pt").write_bytes(b"0" * 3000)
    (train / "final").mkdir()
    (train / "final" / "model.safetensors").write_bytes(b"1" * 10)
    (train / "manifest.json").write_text("{}")
    assert prune_checkpoints(run_cfg) == 3000
    assert not (train / "ray").exists()
    assert (train / "final" / "model.safetensors").is_file() and (train / "manifest.json").is_file()
    assert prune_checkpoints(run_cfg) == 0  # nothing left: no error
    assert load_config(config, ["sweep.keep_checkpoints=true"]).sweep.keep_checkpoints is True


def test_a_failed_run_leaves_no_reservation_behind_for_the_next(tmp_path, ray_local, monkeypatch):
    # A Ray Train run whose worker was killed out of memory kept its placement group (2 CPUs) for good, and the
    # next run's tasks waited for them for ever. Here the first run reserves a CPU the same way and fails.
    import ray
    from ray.util.placement_group import placement_group

    from upft_ray.orchestration import sweep

    cfg = load_config(None, [f"run_dir={tmp_path}", "sweep.seeds=[1, 2]", "sweep.variants=[{name: a}]",
                             "eval.evaluate_base=false"])
    free, seen = ray.available_resources()["CPU"], []

    def run_one(cfg, run_cfg):
        deadline = time.time() + 10  # removal reaches the resource view within moments
        while ray.available_resources().get("CPU", 0.0) < free and time.time() < deadline:
            time.sleep(0.1)
        seen.append(ray.available_resources().get("CPU", 0.0))
        if len(seen) == 1:
            ray.get(placement_group([{"CPU": 1.0}]).ready(), timeout=60)
            raise RuntimeError("worker killed: the node is low on memory")

    monkeypatch.setattr(sweep, "_run_one", run_one)
    _, failures = sweep.run_sweep(cfg)
    assert list(failures) == ["a-s1"] and seen == [free, free]
