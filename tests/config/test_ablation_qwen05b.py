"""The 0.5B sweep config runs what its header says: the optional Qwen model, the paper's recipe at t = 32
and t = 8, the best 135M variants and SFT, 3 seeds each, greedy on the multi-step held-out set."""

from conftest import REPO

from upft_ray.config import load_config
from upft_ray.orchestration.sweep import sweep_runs

CONFIG = REPO / "configs" / "ablation-qwen05b.yaml"


def test_qwen05b_sweep_has_every_variant_with_three_seeds():
    cfg = load_config(CONFIG)  # loads without the model's packages: a registry name is checked, not resolved
    assert cfg.model == "qwen2.5-coder-0.5b-instruct" and cfg.sample.questions == "bundled:multistep-train"
    assert cfg.eval.benchmarks == ["bundled:multistep-heldout"] and cfg.eval.decoding == "greedy"
    assert cfg.eval.evaluate_base  # the base model is the first comparison
    runs = sweep_runs(cfg)
    assert len(runs) == 12 and {seed for _, seed, _ in runs} == {1, 2, 3}
    by_name = {name: run for name, seed, run in runs if seed == 1}
    assert set(by_name) == {"t32", "t8", "eos-none", "sft"}
    recipe = ("loss", "example", 0.1, 5.0e-6, 1)
    for name, t in (("t32", 32), ("t8", 8)):  # the paper's recipe at both t
        run = by_name[name]
        assert run.sample.method == "upft" and run.sample.prefix_tokens == t
        assert (run.train.prefix_eos, run.train.loss_normalization, run.sample.structure_ratio,
                run.train.learning_rate, run.train.epochs) == recipe
    eos_none = by_name["eos-none"]
    assert (eos_none.sample.prefix_tokens, eos_none.train.prefix_eos) == (8, "none")
    assert by_name["sft"].sample.method == "sft"
    assert {run.run_path.parent.name for _, _, run in runs} == {"ablation-qwen05b"}  # resumable: fixed run dirs


def test_heldout_level_is_the_calibrated_one_for_the_sweeps_evaluation_settings():
    """MULTISTEP_STEPS is the level the recorded calibration chose under the settings this sweep evaluates
    with, and its base accuracy there is in the 30-70% band the question set is made for."""
    import json

    from upft_ray.io.multistep_data import MULTISTEP_STEPS

    cfg = load_config(CONFIG)
    record = json.loads((REPO / "bench" / "results" / "multistep_calibration.json").read_text())
    settings = {"max_new_tokens": cfg.eval.max_new_tokens, "chat_template": cfg.eval.engine.chat_template}
    runs = [run for run in record["runs"] if {k: run["settings"][k] for k in settings} == settings]
    assert len(runs) == 1, f"no single calibration with {settings}"
    assert runs[0]["chosen_level"] == MULTISTEP_STEPS
    assert 0.3 <= runs[0]["levels"][str(MULTISTEP_STEPS)]["accuracy"] <= 0.7
    assert cfg.sample.engine.chat_template == cfg.eval.engine.chat_template == "qwen-math-upft"
