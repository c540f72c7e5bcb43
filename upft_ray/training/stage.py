"""Training stage driver: sample shards -> tokenised examples -> Ray Train + DeepSpeed -> HF export.

Writes under ``RUN/train/``: ``examples/part-*.parquet`` (what is trained on, one part per sample
shard; ``dataset``), ``rejected.parquet`` (sampled rows whose example could not be built),
``loop_config.json`` (what every rank gets; ``harness_torch`` runs it without Ray), ``ray/`` (Ray
Train's run and DeepSpeed checkpoints), ``metrics.jsonl``, ``events.jsonl``, ``final/`` (safetensors HF
checkpoint in ``train.export_dtype`` that transformers and vLLM load) and, last, ``manifest.json``.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from pathlib import Path

from upft_ray.config import PipelineConfig, config_to_dict
from upft_ray.config.hashing import train_config_hashes
from upft_ray.engine.models import resolve_model
from upft_ray.io.durable import remove_path
from upft_ray.io.manifests import package_versions, read_json, write_json_atomic
from upft_ray.training.dataset import example_lengths, prepare_examples
from upft_ray.training.export import export_hf_checkpoint, resolve_export_dtype
from upft_ray.training.harness_ray import train_loop_per_worker
from upft_ray.training.loop import LoopConfig, plan_epochs
from upft_ray.training.memory import plan_memory
from upft_ray.training.metrics import read_events
from upft_ray.training.packing import epoch_rows, packing_efficiency
from upft_ray.training.progress import TrainProgress

RUN_NAME = "upft-train"
log = logging.getLogger("upft.train")


def trained_model_dir(cfg: PipelineConfig) -> Path:
    """Return ``RUN/train/final``, the HF export of the fine-tuned model."""
    return cfg.run_path / "train" / "final"


def checkpoints_dir(cfg: PipelineConfig) -> Path:
    """Return ``RUN/train/ray``, Ray Train's storage: the run's checkpoints (weights and optimizer states)."""
    return cfg.run_path / "train" / "ray"


def loop_config(cfg: PipelineConfig, model_path: str, examples_dir: Path, pad_token_id: int) -> LoopConfig:
    """Return what every training rank gets (Ray Train workers, or torchrun via loop_config.json)."""
    train_dir = cfg.run_path / "train"
    return LoopConfig(train=cfg.train, seed=cfg.seed, model_path=model_path, examples_dir=str(examples_dir),
                      metrics_path=str(train_dir / "metrics.jsonl"), events_path=str(train_dir / "events.jsonl"),
                      tensorboard_dir=str(train_dir / "tensorboard") if cfg.train.tensorboard else None,
                      pad_token_id=pad_token_id)


def build_trainer(cfg: PipelineConfig, loop: LoopConfig):
    """Return the Ray Train TorchTrainer for this run (not started), for inspection or ``fit()``."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig  # heavy: Ray loads on use
    from ray.train.torch import TorchTrainer  # heavy: loaded when used

    t = cfg.train
    resources = {"CPU": t.cpus_per_worker, **({"GPU": 1} if t.use_gpu else {})}
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"loop": loop},
        scaling_config=ScalingConfig(num_workers=t.num_workers, use_gpu=t.use_gpu, resources_per_worker=resources),
        run_config=RunConfig(name=RUN_NAME, storage_path=str(checkpoints_dir(cfg)),
                             checkpoint_config=CheckpointConfig(num_to_keep=t.keep_last_k),
                             failure_config=FailureConfig(max_failures=t.max_failures)),
    )


def claim_train_dir(cfg: PipelineConfig, run_hash: str, legacy_hash: str | None = None) -> None:
    """Record which config owns ``RUN/train/``; refuse a different config on a directory with checkpoints.
    A directory claimed under ``legacy_hash`` (this config, hashed as before 2026-12-07) is this run's.

    Ray Train resumes a run whose name and storage path exist, so rerunning the same command after
    a crash continues from the last checkpoint. Resuming a *different* config from those weights
    would silently mix two runs; that is an error instead. A run that stopped before its first
    checkpoint holds nothing to resume: its Ray Train directory is cleared (a fenced delete), so the
    corrected command can start."""
    owner = cfg.run_path / "train" / "run_config.json"
    ray_dir = checkpoints_dir(cfg)
    previous = read_json(owner).get("config_hash") if owner.is_file() else "unknown"
    if ray_dir.exists() and previous not in (run_hash, legacy_hash):
        if any(p.is_dir() and p.name.startswith("checkpoint_") for p in ray_dir.glob("*/*")):
            raise ValueError(f"{cfg.run_path / 'train'} holds a training run with another config "
                             f"(hash {previous}, now {run_hash}); use a new run_dir or delete that directory")
        remove_path(ray_dir)  # no checkpoint: nothing of the other config's training survives
    write_json_atomic(owner, {"config_hash": run_hash})


def plan_steps(cfg: PipelineConfig, examples_dir: Path, counts: dict) -> dict:
    """Return ``counts`` with the step plan added: rows per step, steps, the rows of all epochs = rows trained +
    rows dropped (per epoch too), packing efficiency.

    Raises ValueError when the examples make fewer rows than one optimizer step."""
    t = cfg.train
    rows_per_step = t.micro_batch_size * t.gradient_accumulation_steps * t.num_workers
    lengths = example_lengths(examples_dir)
    pack_length = t.max_length if t.packing else 0
    plan = plan_epochs(lengths, cfg.seed, t.epochs, pack_length, rows_per_step, t.epoch_tail)
    first_rows = epoch_rows(lengths, cfg.seed, 0, pack_length)
    dropped = plan.dropped_per_epoch()
    counts = {**counts, "rows_per_step": rows_per_step, "rows_first_epoch": len(first_rows),
              "steps": plan.total_steps, "epoch_tail": t.epoch_tail, "rows_all_epochs": sum(plan.epoch_rows),
              "rows_trained": plan.rows_trained, "rows_dropped": sum(dropped), "rows_dropped_per_epoch": dropped,
              "rows_dropped_last_step_first_epoch": dropped[0]}
    if t.packing:
        counts["packing_efficiency"] = round(packing_efficiency(first_rows, lengths, t.max_length), 4)
    if counts["steps"] == 0:
        carried = t.epoch_tail == "carry"
        all_epochs = f" ({counts['rows_all_epochs']} over the {t.epochs} epochs carried)" if carried else ""
        raise ValueError(f"{counts['examples']} training examples make {len(first_rows)} rows per epoch{all_epochs}, "
                         f"fewer than one optimizer step ({rows_per_step} = micro_batch_size x "
                         f"gradient_accumulation_steps x num_workers)")
    return counts


def zero_text(t) -> str:
    """Return the ZeRO stage and offload for the log: decided here, or on the workers from their GPU's memory."""
    if t.use_gpu and "auto" in (t.zero_stage, t.offload_optimizer):
        return "ZeRO stage and offload decided on the workers from the GPU's memory"
    plan = plan_memory(t.zero_stage, t.offload_optimizer, t.num_workers if t.num_workers != "auto" else 2)
    return f"ZeRO-{plan.zero_stage}" + (", optimizer offloaded" if plan.offload else "")


def pad_token_id(model_path: str) -> int:
    """Return the model's pad token id (its EOS where it has none)."""
    from transformers import AutoTokenizer  # heavy: loaded when training starts

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def _finished(train_dir: Path, run_hashes: tuple[str, ...]) -> dict | None:
    """Return the manifest of a finished training of this config (written under one of ``run_hashes``) in
    ``train_dir``, its export in place; else None."""
    path = train_dir / "manifest.json"
    manifest = read_json(path) if path.is_file() else None
    if manifest and manifest.get("config_hash") in run_hashes and Path(manifest["final_model"]).is_dir():
        return manifest
    return None


def trained_with(events_path: Path) -> dict | None:
    """Return what the last engine of this run was built with, as the ranks resolved ``auto`` on their hardware
    (precision, ZeRO stage, offload, attention, loss path, world size, device), or None where none recorded it."""
    built = read_events(events_path, "engine_built")
    return {k: v for k, v in built[-1].items() if k not in ("event", "time")} if built else None


def run_train(cfg: PipelineConfig) -> dict:
    """Run the training stage (Ray must be up); return the manifest written to ``RUN/train/manifest.json``.

    Raises FileNotFoundError when the sample stage has not run, ValueError when there are fewer
    examples than one global batch."""
    started, t = time.time(), cfg.train
    model_path, train_dir = resolve_model(cfg.model), cfg.run_path / "train"
    sample_hash = read_json(cfg.run_path / "sample" / "manifest.json")["config_hash"]
    run_hash, legacy_hash = train_config_hashes(cfg, sample_hash)
    if t.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ValueError("train.tensorboard: the tensorboard package is not installed (pip install tensorboard)")
    claim_train_dir(cfg, run_hash, legacy_hash)
    done = _finished(train_dir, (run_hash, legacy_hash))
    if done is not None:  # exporting again would make train/final another model to a resumed evaluation
        log.info("already done (%s): reusing %s", train_dir / "manifest.json", done["final_model"])
        return done
    examples_dir, counts = prepare_examples(cfg, model_path)
    counts = plan_steps(cfg, examples_dir, counts)
    log.info("%d examples (%d prefix, %d full), %d tokens tuned; %d rows%s; %d steps over %d epoch(s) (%d of %d rows "
             "trained, epoch tails %s), %d workers, %s", counts["examples"], counts["prefix_examples"],
             counts["full_examples"], counts["tokens_tuned"], counts["rows_first_epoch"],
             f" (packed, efficiency {counts['packing_efficiency']})" if t.packing else "", counts["steps"], t.epochs,
             counts["rows_trained"], counts["rows_all_epochs"], {"drop": "dropped", "carry": "carried"}[t.epoch_tail],
             t.num_workers, zero_text(t))
    loop = loop_config(cfg, model_path, examples_dir, pad_token_id(model_path))
    # The same loop runs without Ray: torchrun -m upft_ray.training.harness_torch RUN/train/loop_config.json ...
    write_json_atomic(train_dir / "loop_config.json", loop.model_dump(mode="json"))
    with TrainProgress(train_dir / "metrics.jsonl", train_dir / "events.jsonl", counts["steps"]):
        result = build_trainer(cfg, loop).fit()
    if result.checkpoint is None:
        raise RuntimeError(f"training finished without a checkpoint (error: {result.error})")
    with result.checkpoint.as_directory() as ckpt_dir:
        final = export_hf_checkpoint(Path(ckpt_dir), model_path, train_dir / "final", dtype=resolve_export_dtype(t))
    manifest = {
        "stage": "train", "model": cfg.model, "base_model_path": model_path, "seed": cfg.seed,
        "config": config_to_dict(t), "config_hash": run_hash, "counts": counts,
        "resumed_at_steps": [e["step"] for e in read_events(train_dir / "events.jsonl", "resumed")],
        "trained_with": trained_with(train_dir / "events.jsonl"),
        "checkpoint": result.checkpoint.path, "final_model": str(final), "export_dtype": resolve_export_dtype(t),
        "versions": package_versions(), "wall_time_s": round(time.time() - started, 2),
    }
    write_json_atomic(train_dir / "manifest.json", manifest)
    log.info("done in %.1fs; HF export at %s", manifest["wall_time_s"], final)
    return manifest
