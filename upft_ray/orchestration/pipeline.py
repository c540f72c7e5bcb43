"""One run, stage after stage, inside a Ray session: the path ``upft run`` and every sweep run take."""

from __future__ import annotations

from pathlib import Path

from upft_ray.config import PipelineConfig, config_to_dict
from upft_ray.engine.models import resolve_model
from upft_ray.evaluation.stage import run_evaluate
from upft_ray.io.manifests import write_json_atomic
from upft_ray.reporting.report import write_report
from upft_ray.sampling.stage import sample_stage
from upft_ray.training.stage import run_train, trained_model_dir


def record_run(cfg: PipelineConfig) -> None:
    """Write RUN/run.json: the run's label and its whole config as given (report.md reads the label)."""
    write_json_atomic(cfg.run_path / "run.json", {"label": cfg.label, "config": config_to_dict(cfg)})


def evaluate_model(cfg: PipelineConfig, model: str) -> dict:
    """Evaluate ``model`` (Ray must be up): "base" (the configured model, into RUN/eval_base) or a checkpoint
    path (into RUN/eval); write RUN/report.md; return the metrics."""
    if model == "base":
        path, out, label = resolve_model(cfg.model), cfg.run_path / "eval_base", "base"
    else:
        path, out, label = resolve_model(model), cfg.run_path / "eval", "upft"
    metrics = run_evaluate(cfg, path, out, label)
    write_report(cfg.run_path)
    return metrics


def run_pipeline(cfg: PipelineConfig) -> Path:
    """Run sample -> train -> evaluate (the base model too when ``eval.evaluate_base``) with Ray up; each
    stage resumes from what the run directory holds. Return RUN/report.md."""
    record_run(cfg)
    sample_stage(cfg)
    run_train(cfg)
    if cfg.eval.evaluate_base:
        evaluate_model(cfg, "base")
    evaluate_model(cfg, str(trained_model_dir(cfg)))
    return write_report(cfg.run_path)
