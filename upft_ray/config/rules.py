"""Rules that tie config fields together: token limits an engine can honour, GPUs that match tensor
parallelism, sampling settings that would make n samples one, ``auto`` counts that need GPUs.

Each ``*_rules`` function takes a model whose fields are valid (``engine_rules`` an EngineConfig,
``sample_rules`` a SampleConfig, and so on: the models import this module, so it imports none of
them) and returns a Problem per broken rule, naming fields relative to that model (``{at}`` in a message stands for the model's own dotted
prefix). The models run them as after-validators; ``config_from_dict`` runs them all once the
fields are checked, with ``all_rules``, so one ConfigError lists every problem.
"""

from __future__ import annotations

from typing import Callable

from pydantic import BaseModel, ValidationInfo

from upft_ray.config.errors import Problem, RulesBroken

RULES_OFF = {"rules": False}  # validation context: check fields only (config_from_dict runs the rules itself)


def enforce(model, info: ValidationInfo, rules: Callable):
    """Return ``model`` when it keeps ``rules`` (or the validation context turns rules off); raises
    RulesBroken listing each broken one."""
    if (info.context or {}).get("rules", True) and (problems := rules(model)):
        raise RulesBroken(problems)
    return model


def engine_rules(e: BaseModel) -> list[Problem]:
    """GPUs per replica must match tensor parallelism (one GPU per rank, or a share of one GPU at TP 1);
    ``auto`` replicas count GPUs, so they need GPUs per replica."""
    tp, gpus = e.tensor_parallel_size, e.gpus_per_replica
    reads = ("tensor_parallel_size", "gpus_per_replica")
    problems = []
    if tp > 1 and gpus == 0:
        problems.append(Problem("tensor_parallel_size", f"{tp} splits each replica over {tp} GPUs, but "
                                f"{{at}}gpus_per_replica is 0 (CPU); set gpus_per_replica: {tp}, or "
                                "tensor_parallel_size: 1 on CPU", reads=reads))
    elif tp > 1 and gpus != tp:
        problems.append(Problem("gpus_per_replica", f"{gpus} does not match {{at}}tensor_parallel_size {tp} (one GPU "
                                f"per tensor-parallel rank); set gpus_per_replica: {tp}", reads=reads))
    elif tp == 1 and gpus > 1:
        problems.append(Problem("gpus_per_replica", f"{gpus} GPUs for a replica with tensor_parallel_size 1 leaves "
                                "all but one idle; set tensor_parallel_size to the GPU count, or gpus_per_replica <= 1",
                                reads=reads))
    if e.num_replicas == "auto" and gpus <= 0:
        problems.append(Problem("num_replicas", "auto counts GPUs; set {at}gpus_per_replica (= tensor_parallel_size) "
                                "or give a number", reads=("num_replicas", "gpus_per_replica")))
    return problems


def _fits(name: str, tokens: object, engine: str, max_model_len: int) -> list[Problem]:
    if isinstance(tokens, int) and tokens > max_model_len:
        return [Problem(name, f"{tokens} tokens do not fit in {{at}}{engine}.max_model_len {max_model_len} (prompt + "
                        "generation); lower it or raise max_model_len", reads=(name, f"{engine}.max_model_len"))]
    return []


def sample_rules(s: BaseModel) -> list[Problem]:
    """Token limits the engine cannot honour, and settings that make n samples one sample."""
    problems = (_fits("max_new_tokens", s.max_new_tokens, "engine", s.engine.max_model_len)
                + _fits("prefix_tokens", s.prefix_tokens, "engine", s.engine.max_model_len))
    if s.num_samples > 1 and s.temperature == 0:
        problems.append(Problem("temperature", f"0 (greedy) makes the {s.num_samples} samples per question "
                                "identical; raise it or set {at}num_samples: 1", reads=("temperature", "num_samples")))
    elif s.prefix_tokens == "auto" and s.temperature == 0:
        problems.append(Problem("temperature", "0 (greedy) makes the analyze.num_samples solutions that "
                                "prefix_tokens: auto compares identical; raise it or give prefix_tokens a number",
                                reads=("temperature", "prefix_tokens")))
    if s.top_p == 0:
        problems.append(Problem("top_p", "0 keeps no token to sample from; use a value in (0, 1]"))
    return problems


def eval_rules(e: BaseModel) -> list[Problem]:
    """Token limits, and sampling settings that only make sense with ``decoding: sample``."""
    problems = _fits("max_new_tokens", e.max_new_tokens, "engine", e.engine.max_model_len)
    if e.decoding == "greedy" and e.num_samples != 1:
        problems.append(Problem("num_samples", "greedy decoding gives one answer per question; set "
                                "{at}decoding=sample for pass@k / maj@k", reads=("num_samples", "decoding")))
    if e.decoding == "sample" and e.num_samples > 1 and e.temperature == 0:
        problems.append(Problem("temperature", f"0 makes the {e.num_samples} sampled answers per question identical; "
                                "raise it or use {at}decoding: greedy",
                                reads=("temperature", "num_samples", "decoding")))
    if e.decoding == "sample" and e.top_p == 0:
        problems.append(Problem("top_p", "0 keeps no token to sample from; use a value in (0, 1]",
                                reads=("top_p", "decoding")))
    return problems


def judge_rules(j: BaseModel) -> list[Problem]:
    """The judge's report must fit its engine's context (its prompt is checked per row when judged)."""
    return _fits("max_new_tokens", j.max_new_tokens, "engine", j.engine.max_model_len)


def train_rules(t: BaseModel) -> list[Problem]:
    """Optimizer offload needs GPUs and ZeRO; ``auto`` workers count GPUs."""
    problems = []
    if t.offload_optimizer is True and not t.use_gpu:
        problems.append(Problem("offload_optimizer", "moves optimizer state from GPU to CPU memory; training on CPU "
                                "has nothing to offload (set {at}use_gpu: true on GPU workers)",
                                reads=("offload_optimizer", "use_gpu")))
    if t.offload_optimizer is True and t.zero_stage == 0:
        problems.append(Problem("offload_optimizer", "needs ZeRO stage 1, 2 or 3",
                                reads=("offload_optimizer", "zero_stage")))
    if t.num_workers == "auto" and not t.use_gpu:
        problems.append(Problem("num_workers", "auto is one worker per GPU; set {at}use_gpu: true or give a number",
                                reads=("num_workers", "use_gpu")))
    return problems


def sweep_rules(s: BaseModel) -> list[Problem]:
    """Variant names name run directories, so they must be unique."""
    names = [v["name"] for v in s.variants]
    if len(names) != len(set(names)):
        return [Problem("variants", f"names must be unique, got {names}")]
    return []


def pipeline_rules(cfg: BaseModel) -> list[Problem]:
    """Rules across stages: the analyses generate with the sampling engine."""
    return _fits("analyze.max_new_tokens", cfg.analyze.max_new_tokens, "sample.engine",
                 cfg.sample.engine.max_model_len)


def all_rules(cfg: BaseModel) -> list[Problem]:
    """Return every broken rule of ``cfg`` and its stages, with full dotted names."""
    def at(prefix: str, problems: list[Problem]) -> list[Problem]:
        return [p.under(prefix) for p in problems]

    return (at("sample.", sample_rules(cfg.sample)) + at("sample.engine.", engine_rules(cfg.sample.engine))
            + at("train.", train_rules(cfg.train)) + at("eval.", eval_rules(cfg.eval))
            + at("eval.engine.", engine_rules(cfg.eval.engine)) + at("eval.judge.", judge_rules(cfg.eval.judge))
            + at("eval.judge.engine.", engine_rules(cfg.eval.judge.engine)) + at("sweep.", sweep_rules(cfg.sweep))
            + at("", pipeline_rules(cfg)))
