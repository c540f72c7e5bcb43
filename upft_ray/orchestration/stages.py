"""The stages as library calls (the CLI, ``upft_ray.api`` and ``jobs/`` are thin wrappers around these).

Every entry point runs the same way (:func:`run_stage`): its inputs are checked before anything is
written or Ray starts (``preflight``), then it holds the run directory's lease (one attempt at a time,
``upft_ray.io.lease``), refuses code other than the one that wrote the directory (``provenance``), and
runs its body in one Ray session with ``auto`` resource counts decided from the GPUs Ray sees.
"""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, TypeVar

from upft_ray.analysis.collapse import EOS_QUESTIONS, collapse_dir, measure_collapse
from upft_ray.analysis.rollouts import run_rollouts
from upft_ray.config import PipelineConfig
from upft_ray.engine.models import resolve_model
from upft_ray.io.claims import LEASE_DIR
from upft_ray.io.fencing import STAGING_DIR
from upft_ray.io.lease import run_lease
from upft_ray.orchestration.pipeline import evaluate_model, run_pipeline
from upft_ray.orchestration.preflight import check_ready
from upft_ray.orchestration.provenance import RECORD, check_code
from upft_ray.orchestration.sweep import restore_kept_runs, run_sweep
from upft_ray.runtime.placement import with_resolved_resources
from upft_ray.runtime.ray_session import ray_session
from upft_ray.sampling.prefix_length import run_consistency
from upft_ray.sampling.stage import sample_stage
from upft_ray.training.stage import run_train, trained_model_dir

T = TypeVar("T")


@contextmanager
def leased_run(run_dir: Path):
    """Hold the lease on ``run_dir`` for the block; a start that fails before writing anything of its own
    leaves no run directory made just for its lease."""
    existed = run_dir.exists()
    try:
        with run_lease(run_dir):
            yield
    except BaseException:
        if not existed:
            _remove_if_only_bookkeeping(run_dir)
        raise


def _remove_if_only_bookkeeping(run_dir: Path) -> None:
    """Remove a run directory that holds nothing but the lease, its staging area and the code record."""
    try:
        if {p.name for p in run_dir.iterdir()} <= {LEASE_DIR, STAGING_DIR, RECORD}:
            shutil.rmtree(run_dir)
    except OSError:
        pass  # best effort: another attempt may be using it now


def run_stage(cfg: PipelineConfig, checks: tuple[str, ...], body: Callable[[PipelineConfig], T],
              model: str | None = None, ray: bool = True) -> T:
    """Run ``body(cfg)``: inputs of ``checks`` checked first (ConfigError listing each problem), then under the
    run directory's lease and code check, in a Ray session (unless ``ray`` is False) with ``auto`` counts
    resolved. Raises LeaseHeld/LeaseError when the lease cannot be held."""
    check_ready(cfg, checks, model)
    with leased_run(cfg.run_path):
        check_code(cfg.run_path)
        if not ray:
            return body(cfg)
        with ray_session(cfg.ray):
            return body(with_resolved_resources(cfg))


def sample(cfg: PipelineConfig) -> dict:
    """Run the sampling stage (``prefix_tokens: auto`` decided first); return its manifest."""
    return run_stage(cfg, ("sample",), sample_stage)


def train(cfg: PipelineConfig) -> dict:
    """Run the training stage; return its manifest."""
    return run_stage(cfg, ("train",), run_train)


def evaluate(cfg: PipelineConfig, model: str | None = None) -> dict:
    """Evaluate ``model``: "base" (the configured model, into RUN/eval_base), a checkpoint path (into
    RUN/eval), or None (RUN/train/final if it exists, else the base model). Returns the metrics."""
    if model is None:
        model = str(trained_model_dir(cfg)) if trained_model_dir(cfg).is_dir() else "base"
    return run_stage(cfg, ("evaluate",), lambda c: evaluate_model(c, model), None if model == "base" else model)


def run(cfg: PipelineConfig) -> Path:
    """Run sample -> train -> evaluate (base and fine-tuned) in one Ray session; return report.md."""
    return run_stage(cfg, ("sample", "train", "evaluate"), run_pipeline)


def analyze_consistency(cfg: PipelineConfig) -> dict:
    """Measure prefix self-consistency on ``sample.questions`` into RUN/analysis/consistency; return the result."""
    return run_stage(cfg, ("sample",), run_consistency)


def analyze_rollouts(cfg: PipelineConfig) -> dict:
    """Roll out completions from cut points of sampled solutions into RUN/analysis/rollouts; return the summary."""
    return run_stage(cfg, ("sample",), run_rollouts)


def analyze_collapse(cfg: PipelineConfig, max_questions: int = EOS_QUESTIONS, batch_size: int = 8) -> Path:
    """Measure answer lengths and P(EOS) after t tokens for every evaluation in ``run_dir`` (a run or a
    sweep) into RUN/analysis/collapse; return collapse.md. Runs transformers on CPU, without Ray."""
    def body(c: PipelineConfig) -> Path:
        restore_kept_runs(c)  # a sweep's runs kept in sweep.records_dir, on a machine that lacks them
        measure_collapse(c.run_path, resolve_model(c.model), c.sample.prefix_tokens, c.sample.task_template,
                         c.sample.system_prompt, max_questions, batch_size, c.eval.engine.chat_template)
        return collapse_dir(c.run_path) / "collapse.md"

    return run_stage(cfg, (), body, ray=False)


def sweep(cfg: PipelineConfig) -> tuple[Path, dict[str, str]]:
    """Run ``sweep.variants`` x ``sweep.seeds``; return RUN/report.md and the failed or refused runs."""
    return run_stage(cfg, ("sample", "evaluate"), run_sweep)


def exit_code(result: object) -> int:
    """Return the exit status a stage's result calls for: 1 for a sweep with failed or refused runs, else 0
    (a stage that failed outright has raised instead of returning)."""
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], dict):
        return 1 if result[1] else 0
    return 0
