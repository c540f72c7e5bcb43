"""The sampling stage: ``prefix_tokens: auto`` decided first (``prefix_length``), then the chunked run
(``pipeline.run_sample``) into ``RUN/sample/``."""

from __future__ import annotations

from upft_ray.config import PipelineConfig
from upft_ray.sampling.pipeline import run_sample
from upft_ray.sampling.prefix_length import resolve_prefix_tokens


def sample_stage(cfg: PipelineConfig) -> dict:
    """Run the sampling stage (Ray must be up) with ``prefix_tokens: auto`` decided first; return its manifest."""
    resolved, choice = resolve_prefix_tokens(cfg)
    return run_sample(resolved, prefix_choice=choice)
