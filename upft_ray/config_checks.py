"""Rules that tie config fields together, and value ranges the per-field checks cannot state
(seeds NumPy and vLLM accept, token limits an engine can honour, GPUs that match tensor parallelism,
sampling settings that would make n samples one). ``config_from_dict`` adds their problems to the
per-field ones, so one ConfigError lists everything. Values of the wrong type are skipped here:
the per-field checks have named them already.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # config imports this module; the types are for reading only
    from upft_ray.config import EngineConfig, PipelineConfig


def cross_field_problems(cfg: PipelineConfig) -> list[str]:
    """Return one 'dotted.field: what is wrong' line per broken rule of ``cfg`` (a PipelineConfig)."""
    return (_seed_problems(cfg) + _generation_problems(cfg) + _engine_problems("sample.engine", cfg.sample.engine)
            + _engine_problems("eval.engine", cfg.eval.engine))


_SEED_MAX = 2**32 - 1  # NumPy and vLLM seed their generators with 32-bit unsigned integers


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _seed_problems(cfg: PipelineConfig) -> list[str]:
    problems = []
    if _is_int(cfg.seed) and not 0 <= cfg.seed <= _SEED_MAX:
        problems.append(f"seed: {cfg.seed} is outside 0..{_SEED_MAX} (the range NumPy and vLLM seed with)")
    if isinstance(cfg.sweep.seeds, list) and any(_is_int(x) and not 0 <= x <= _SEED_MAX for x in cfg.sweep.seeds):
        problems.append(f"sweep.seeds: every seed must be in 0..{_SEED_MAX}, got {cfg.sweep.seeds!r}")
    return problems


def _generation_problems(cfg: PipelineConfig) -> list[str]:
    """Token limits the engine cannot honour, and sampling settings that make n samples one sample."""
    s, e, a = cfg.sample, cfg.eval, cfg.analyze
    problems = []
    limits = [("sample.max_new_tokens", s.max_new_tokens, "sample.engine", s.engine),
              ("sample.prefix_tokens", s.prefix_tokens, "sample.engine", s.engine),
              ("eval.max_new_tokens", e.max_new_tokens, "eval.engine", e.engine),
              ("analyze.max_new_tokens", a.max_new_tokens, "sample.engine", s.engine)]  # analyze uses sample's engine
    for name, tokens, engine_name, engine in limits:
        if _is_int(tokens) and _is_int(engine.max_model_len) and tokens > engine.max_model_len:
            problems.append(f"{name}: {tokens} tokens do not fit in {engine_name}.max_model_len "
                            f"{engine.max_model_len} (prompt + generation); lower it or raise max_model_len")
    if _is_int(s.num_samples) and s.num_samples > 1 and s.temperature == 0:
        problems.append(f"sample.temperature: 0 (greedy) makes the {s.num_samples} samples per question identical; "
                        "raise it or set sample.num_samples: 1")
    elif s.prefix_tokens == "auto" and s.temperature == 0:
        problems.append("sample.temperature: 0 (greedy) makes the analyze.num_samples solutions that prefix_tokens: "
                        "auto compares identical; raise it or give prefix_tokens a number")
    if e.decoding == "sample" and _is_int(e.num_samples) and e.num_samples > 1 and e.temperature == 0:
        problems.append(f"eval.temperature: 0 makes the {e.num_samples} sampled answers per question identical; "
                        "raise it or use eval.decoding: greedy")
    for name, top_p, used in (("sample.top_p", s.top_p, True), ("eval.top_p", e.top_p, e.decoding == "sample")):
        if used and top_p == 0:
            problems.append(f"{name}: 0 keeps no token to sample from; use a value in (0, 1]")
    return problems


def _engine_problems(name: str, e: EngineConfig) -> list[str]:
    """GPUs per replica must match tensor parallelism: one GPU per rank, or a share of one GPU at TP 1."""
    tp, gpus = e.tensor_parallel_size, e.gpus_per_replica
    if not (_is_int(tp) and _is_number(gpus)):
        return []
    if tp > 1 and gpus == 0:
        return [f"{name}.tensor_parallel_size: {tp} splits each replica over {tp} GPUs, but {name}.gpus_per_replica "
                f"is 0 (CPU); set gpus_per_replica: {tp}, or tensor_parallel_size: 1 on CPU"]
    if tp > 1 and gpus != tp:
        return [f"{name}.gpus_per_replica: {gpus} does not match {name}.tensor_parallel_size {tp} (one GPU per "
                f"tensor-parallel rank); set gpus_per_replica: {tp}"]
    if tp == 1 and gpus > 1:
        return [f"{name}.gpus_per_replica: {gpus} GPUs for a replica with tensor_parallel_size 1 leaves all but one "
                f"idle; set tensor_parallel_size to the GPU count, or gpus_per_replica <= 1"]
    return []
