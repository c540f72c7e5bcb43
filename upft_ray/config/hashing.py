"""What a run's results depend on, as stable hashes: a run directory refuses work of another config.

Three views of a PipelineConfig are hashed:

- ``sample_config_hash``: model, seed and what shapes the samples (engine placement left out);
- ``results_config``: everything a run's results depend on (where and how it runs left out), which a
  sweep records per run directory;
- ``base_results_config``: what the base model's evaluation depends on.

Settings that only place, pace or log work (``RESOURCE_FIELDS`` of an engine, ``OPERATIONAL`` of a
stage) are in none of them: a run resumed on other machines, with other replicas or timeouts, is the
same run. A field added after run directories exist is hashed only when set (its metadata says
``hashed: when_set``), so adding it leaves every existing run's hash as it was.
"""

from __future__ import annotations

import hashlib
import json

from pydantic import BaseModel

from upft_ray.config.models import PipelineConfig

# Engine settings that only place work on hardware or watch it; a run resumed on other machines may change them.
RESOURCE_FIELDS = ("num_replicas", "cpus_per_replica", "gpus_per_replica", "gpu_memory_utilization",
                   "cpu_kv_cache_gib", "batch_size", "enforce_eager", "tensor_parallel_size",
                   "max_batches_in_flight", "stall_timeout_s", "speculative_tail",
                   "lost_work_timeout_s")

# Settings that only place, log or keep work: a run that differs only in these has the same results.
OPERATIONAL = {"train": ("cpus_per_worker", "tensorboard", "log_every_steps", "keep_last_k", "max_failures",
                         "checkpoint_every_steps"), "eval": ("evaluate_base",)}


def config_hash(config: dict) -> str:
    """Return a short stable hash of a config dict (key order does not matter)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def hashed_dict(model: BaseModel) -> dict:
    """Return ``model`` as a plain dict for hashing: fields marked ``hashed: when_set`` are left out while
    they hold their default (nested models too)."""
    out = {}
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if extra.get("hashed") == "when_set" and value == field.get_default(call_default_factory=True):
            continue
        out[name] = hashed_dict(value) if isinstance(value, BaseModel) else _plain(value)
    return out


def _plain(value):
    """Return ``value`` as model_dump would (lists of models, TypedDicts, tuples as lists)."""
    if isinstance(value, BaseModel):
        return hashed_dict(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _without_resources(engine: dict) -> dict:
    return {k: v for k, v in engine.items() if k not in RESOURCE_FIELDS}


def sample_config_hash(cfg: PipelineConfig) -> str:
    """Return the hash that identifies a sampling run: model, seed and what shapes the samples.

    The sampler hashes its config after ``resolve_sampling``: sampling fields saying ``model`` count
    by the values the model gave them, so the same numbers written out explicitly hash the same."""
    sample = hashed_dict(cfg.sample)
    sample["engine"] = _without_resources(sample["engine"])
    return config_hash({"model": cfg.model, "seed": cfg.seed, **sample})


def train_config_hash(cfg: PipelineConfig, sample_hash: str) -> str:
    """Return the hash that identifies a training run: model, seed, the samples it trains on, its settings
    without the operational ones (``OPERATIONAL["train"]``): a run resumed with another checkpoint cadence,
    failure budget or log interval is the same run."""
    return _train_hash(cfg, sample_hash, OPERATIONAL["train"])


def train_config_hashes(cfg: PipelineConfig, sample_hash: str) -> tuple[str, str]:
    """Return (the training run's hash, the hash a train directory written before 2026-12-07 carries for the
    same config: operational settings included). A directory holding either is this run's."""
    return train_config_hash(cfg, sample_hash), _train_hash(cfg, sample_hash, without=())


def _train_hash(cfg: PipelineConfig, sample_hash: str, without: tuple[str, ...]) -> str:
    train = {k: v for k, v in hashed_dict(cfg.train).items() if k not in without}
    return config_hash({"model": cfg.model, "seed": cfg.seed, "sample": sample_hash, **train})


def results_config(cfg: PipelineConfig) -> dict:
    """Return what a run's results depend on: the config without where it runs (run_dir, ray, engine
    placement), without its label and without logging/checkpoint-keeping settings."""
    data = hashed_dict(cfg)
    for key in ("run_dir", "label", "ray", "sweep"):
        data.pop(key)
    for stage in ("sample", "eval"):
        data[stage]["engine"] = _without_resources(data[stage]["engine"])
    if "judge" in data["eval"]:  # hashed only when set (eval.judge.model names a judge)
        data["eval"]["judge"]["engine"] = _without_resources(data["eval"]["judge"]["engine"])
    for stage, keys in OPERATIONAL.items():
        for key in keys:
            data[stage].pop(key, None)
    return data


def base_results_config(cfg: PipelineConfig) -> dict:
    """Return what the base model's evaluation depends on: model, eval settings, system prompt, and the
    seed only when decoding samples."""
    data = results_config(cfg)
    out = {"model": data["model"], "eval": data["eval"], "system_prompt": cfg.sample.system_prompt}
    if cfg.eval.decoding == "sample":
        out["seed"] = cfg.seed
    return out
