"""The stages as library calls (the CLI and jobs/ are thin wrappers around these)."""

from __future__ import annotations

from pathlib import Path

from upft_ray.config import PipelineConfig
from upft_ray.models import resolve_model
from upft_ray.placement import with_resolved_resources
from upft_ray.ray_runtime import ray_session
from upft_ray.report import write_report
from upft_ray.run_lease import leased


def check_inputs(cfg: PipelineConfig, stages: tuple[str, ...], model: str | None = None) -> None:
    """Fail fast, before Ray starts, on what the given stages would fail on at their start: a model
    that does not resolve, a run_dir that cannot be written, question files that cannot be read.

    Raises ConfigError listing every problem, one 'field: what is wrong' line each (exit 2 in the CLI)."""
    from upft_ray.preflight import check_ready

    check_ready(cfg, stages, model)


@leased  # one attempt at a time per run directory (upft_ray.run_lease)
def sample(cfg: PipelineConfig) -> dict:
    """Run the sampling stage on Ray (``prefix_tokens: auto`` decided first); return its manifest."""
    from upft_ray.analysis.runner import sample_stage

    check_inputs(cfg, ("sample",))
    with ray_session(cfg.ray):
        cfg = with_resolved_resources(cfg)  # `auto` counts, from the GPUs Ray sees
        return sample_stage(cfg)


@leased  # one attempt at a time per run directory (upft_ray.run_lease)
def train(cfg: PipelineConfig) -> dict:
    """Run the training stage on Ray; return its manifest."""
    from upft_ray.training.trainer import run_train

    check_inputs(cfg, ("train",))
    with ray_session(cfg.ray):
        cfg = with_resolved_resources(cfg)  # `auto` counts, from the GPUs Ray sees
        return run_train(cfg)


@leased  # one attempt at a time per run directory (upft_ray.run_lease)
def evaluate(cfg: PipelineConfig, model: str | None = None) -> dict:
    """Evaluate ``model``: "base" (the configured model, into RUN/eval_base), a checkpoint path
    (into RUN/eval), or None (RUN/train/final if it exists, else the base model). Returns metrics."""
    from upft_ray.evaluation.evaluator import run_evaluate
    from upft_ray.training.trainer import trained_model_dir

    if model is None:
        model = str(trained_model_dir(cfg)) if trained_model_dir(cfg).is_dir() else "base"
    check_inputs(cfg, ("evaluate",), None if model == "base" else model)
    if model == "base":
        path, out, label = resolve_model(cfg.model), cfg.run_path / "eval_base", "base"
    else:
        path, out, label = resolve_model(model), cfg.run_path / "eval", "upft"
    with ray_session(cfg.ray):
        cfg = with_resolved_resources(cfg)  # `auto` counts, from the GPUs Ray sees
        metrics = run_evaluate(cfg, path, out, label)
    write_report(cfg.run_path)
    return metrics


def record_run(cfg: PipelineConfig) -> None:
    """Write RUN/run.json: the run's label and its whole config as given (report.md reads the label)."""
    from upft_ray.config import config_to_dict
    from upft_ray.schema import write_json_atomic

    write_json_atomic(cfg.run_path / "run.json", {"label": cfg.label, "config": config_to_dict(cfg)})


@leased  # one attempt at a time per run directory (upft_ray.run_lease)
def run(cfg: PipelineConfig) -> Path:
    """Run sample -> train -> evaluate (base and fine-tuned) in one Ray session; return report.md."""
    from upft_ray.analysis.runner import sample_stage
    from upft_ray.evaluation.evaluator import run_evaluate
    from upft_ray.training.trainer import run_train, trained_model_dir

    check_inputs(cfg, ("sample", "train", "evaluate"))
    record_run(cfg)
    with ray_session(cfg.ray):
        cfg = with_resolved_resources(cfg)  # `auto` counts, from the GPUs Ray sees
        sample_stage(cfg)
        run_train(cfg)
        if cfg.eval.evaluate_base:
            run_evaluate(cfg, resolve_model(cfg.model), cfg.run_path / "eval_base", "base")
        run_evaluate(cfg, str(trained_model_dir(cfg)), cfg.run_path / "eval", "upft")
    return write_report(cfg.run_path)


@leased  # one attempt at a time per run directory (upft_ray.run_lease)
def analyze_consistency(cfg: PipelineConfig) -> dict:
    """Measure prefix self-consistency on ``sample.questions`` into RUN/analysis/consistency; return the result."""
    from upft_ray.analysis.runner import run_consistency

    check_inputs(cfg, ("sample",))
    with ray_session(cfg.ray):
        cfg = with_resolved_resources(cfg)  # `auto` counts, from the GPUs Ray sees
        return run_consistency(cfg)


@leased  # one attempt at a time per run directory (upft_ray.run_lease)
def analyze_rollouts(cfg: PipelineConfig) -> dict:
    """Roll out completions from cut points of sampled solutions into RUN/analysis/rollouts; return the summary."""
    from upft_ray.analysis.rollouts import run_rollouts

    check_inputs(cfg, ("sample",))
    with ray_session(cfg.ray):
        cfg = with_resolved_resources(cfg)  # `auto` counts, from the GPUs Ray sees
        return run_rollouts(cfg)


@leased  # one attempt at a time per run directory (upft_ray.run_lease)
def analyze_collapse(cfg: PipelineConfig, max_questions: int = 100, batch_size: int = 8) -> Path:
    """Measure answer lengths and P(EOS) after t tokens for every evaluation in ``run_dir`` (a run or a
    sweep) into RUN/analysis/collapse; return collapse.md. Runs transformers on CPU, without Ray."""
    from upft_ray.analysis.collapse import measure_collapse

    measure_collapse(cfg.run_path, resolve_model(cfg.model), cfg.sample.prefix_tokens, cfg.sample.task_template,
                     cfg.sample.system_prompt, max_questions, batch_size)
    return cfg.run_path / "analysis" / "collapse" / "collapse.md"


@leased  # one attempt at a time per run directory (upft_ray.run_lease)
def sweep(cfg: PipelineConfig) -> tuple[Path, dict[str, str]]:
    """Run ``sweep.variants`` x ``sweep.seeds``; return RUN/report.md and the failed or refused runs."""
    from upft_ray.sweep import run_sweep

    return run_sweep(cfg)


def exit_code(result: object) -> int:
    """Return the exit status a stage's result calls for: 1 for a sweep with failed or refused runs, else 0
    (a stage that failed outright has raised instead of returning)."""
    from upft_ray.sweep import exit_code as sweep_exit_code

    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], dict):
        return sweep_exit_code(result[1])
    return 0
