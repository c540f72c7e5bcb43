"""``auto`` resource counts: vLLM replicas and Ray Train workers sized to the GPUs Ray sees.

``sample.engine.num_replicas``, ``eval.engine.num_replicas`` and ``train.num_workers`` may say
``auto`` (``configs/gpu-1node.yaml``). The pipeline decides them once Ray is up and before any stage
starts, from the cluster's GPU count, so every stage below sees plain numbers.
"""

from __future__ import annotations

import logging

from upft_ray.config import PipelineConfig

log = logging.getLogger("upft")


def resolve_auto_resources(cfg: PipelineConfig, gpus: float) -> PipelineConfig:
    """Return ``cfg`` with every ``auto`` count replaced by what ``gpus`` GPUs hold.

    A replica takes ``gpus_per_replica`` GPUs, so ``auto`` replicas = floor(gpus / gpus_per_replica);
    ``auto`` workers = floor(gpus) (one GPU each). Sampling, training and evaluation run one after
    the other, so each may use every GPU. A config without ``auto`` is returned unchanged.
    Raises ValueError naming the field when the GPUs cannot hold one replica or one worker."""
    def replicas(section, at: str):
        """Return ``section`` with its engine's ``auto`` replicas counted (``at``: its dotted name)."""
        engine = section.engine
        if engine.num_replicas != "auto":
            return section
        count = int(gpus // engine.gpus_per_replica) if engine.gpus_per_replica > 0 else 0
        if count < 1:
            raise ValueError(f"{at}.engine.num_replicas: auto found {gpus:g} GPU(s) in the Ray cluster, fewer "
                             f"than one replica's {engine.gpus_per_replica:g}")
        return section.model_copy(update={"engine": engine.model_copy(update={"num_replicas": count})})

    changes = {"sample": replicas(cfg.sample, "sample"), "eval": replicas(cfg.eval, "eval")}
    judge = replicas(cfg.eval.judge, "eval.judge")  # the judge's pool runs after the answers': every GPU too
    if judge is not cfg.eval.judge:
        changes["eval"] = changes["eval"].model_copy(update={"judge": judge})
    changes = {k: v for k, v in changes.items() if v is not getattr(cfg, k)}
    if cfg.train.num_workers == "auto":
        if int(gpus) < 1:
            raise ValueError(f"train.num_workers: auto found {gpus:g} GPU(s) in the Ray cluster; one worker needs one")
        changes["train"] = cfg.train.model_copy(update={"num_workers": int(gpus)})
    return cfg.model_copy(update=changes) if changes else cfg


def cluster_gpus() -> float:
    """Return the GPUs of the Ray cluster this process is connected to (Ray must be initialised)."""
    import ray  # heavy: Ray loads only when a stage runs

    return float(ray.cluster_resources().get("GPU", 0.0))


def with_resolved_resources(cfg: PipelineConfig) -> PipelineConfig:
    """Return ``cfg`` with its ``auto`` counts decided from the connected Ray cluster's GPUs, printing them."""
    if "auto" not in (cfg.sample.engine.num_replicas, cfg.eval.engine.num_replicas, cfg.train.num_workers,
                      cfg.eval.judge.engine.num_replicas):
        return cfg
    gpus = cluster_gpus()
    out = resolve_auto_resources(cfg, gpus)
    log.info("auto on %g GPU(s): sample.engine.num_replicas=%s, eval.engine.num_replicas=%s, train.num_workers=%s",
             gpus, out.sample.engine.num_replicas, out.eval.engine.num_replicas, out.train.num_workers)
    return out
