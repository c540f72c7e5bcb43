"""The stages as library calls (the CLI and jobs/ are thin wrappers around these)."""

from __future__ import annotations

from pathlib import Path

from upft_ray.config import PipelineConfig
from upft_ray.models import resolve_model
from upft_ray.ray_runtime import ray_session
from upft_ray.report import write_report


def check_inputs(cfg: PipelineConfig, stages: tuple[str, ...], model: str | None = None) -> None:
    """Fail fast, before Ray starts, on what the given stages would fail on at their start: a model
    that does not resolve, a run_dir that cannot be written, question files that cannot be read.

    Raises ConfigError listing every problem, one 'field: what is wrong' line each (exit 2 in the CLI)."""
    from upft_ray.preflight import check_ready

    check_ready(cfg, stages, model)


def trained_model_dir(cfg: PipelineConfig) -> Path:
    """Return ``RUN/train/final``, the HF export of the fine-tuned model."""
    return cfg.run_path / "train" / "final"


def sample(cfg: PipelineConfig) -> dict:
    """Run the sampling stage on Ray; return its manifest."""
    from upft_ray.sampling.sampler import run_sample

    check_inputs(cfg, ("sample",))
    with ray_session(cfg.ray):
        return run_sample(cfg)


def train(cfg: PipelineConfig) -> dict:
    """Run the training stage on Ray; return its manifest."""
    from upft_ray.training.trainer import run_train

    check_inputs(cfg, ("train",))
    with ray_session(cfg.ray):
        return run_train(cfg)


def evaluate(cfg: PipelineConfig, model: str | None = None) -> dict:
    """Evaluate ``model``: "base" (the configured model, into RUN/eval_base), a checkpoint path
    (into RUN/eval), or None (RUN/train/final if it exists, else the base model). Returns metrics."""
    from upft_ray.evaluation.evaluator import run_evaluate

    if model is None:
        model = str(trained_model_dir(cfg)) if trained_model_dir(cfg).is_dir() else "base"
    check_inputs(cfg, ("evaluate",), None if model == "base" else model)
    if model == "base":
        path, out, label = resolve_model(cfg.model), cfg.run_path / "eval_base", "base"
    else:
        path, out, label = resolve_model(model), cfg.run_path / "eval", "upft"
    with ray_session(cfg.ray):
        metrics = run_evaluate(cfg, path, out, label)
    write_report(cfg.run_path)
    return metrics


def run(cfg: PipelineConfig) -> Path:
    """Run sample -> train -> evaluate (base and fine-tuned) in one Ray session; return report.md."""
    from upft_ray.evaluation.evaluator import run_evaluate
    from upft_ray.sampling.sampler import run_sample
    from upft_ray.training.trainer import run_train

    check_inputs(cfg, ("sample", "train", "evaluate"))
    with ray_session(cfg.ray):
        run_sample(cfg)
        run_train(cfg)
        if cfg.eval.evaluate_base:
            run_evaluate(cfg, resolve_model(cfg.model), cfg.run_path / "eval_base", "base")
        run_evaluate(cfg, str(trained_model_dir(cfg)), cfg.run_path / "eval", "upft")
    return write_report(cfg.run_path)


def analyze_consistency(cfg: PipelineConfig) -> dict:
    """Measure prefix self-consistency on ``sample.questions`` into RUN/analysis/consistency; return the result."""
    from upft_ray.analysis.runner import run_consistency

    check_inputs(cfg, ("sample",))
    with ray_session(cfg.ray):
        return run_consistency(cfg)


def analyze_rollouts(cfg: PipelineConfig) -> dict:
    """Roll out completions from cut points of sampled solutions into RUN/analysis/rollouts; return the summary."""
    from upft_ray.analysis.rollouts import run_rollouts

    check_inputs(cfg, ("sample",))
    with ray_session(cfg.ray):
        return run_rollouts(cfg)


def sweep(cfg: PipelineConfig) -> tuple[Path, dict[str, str]]:
    """Run ``sweep.variants`` x ``sweep.seeds``; return RUN/report.md and the failed runs."""
    from upft_ray.sweep import run_sweep

    return run_sweep(cfg)
