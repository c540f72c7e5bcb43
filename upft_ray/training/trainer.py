"""Training stage driver: sample shards -> tokenised examples -> Ray Train + DeepSpeed -> HF export.

Writes under ``RUN/train/``: ``examples/part-*.parquet`` (what is trained on, one part per sample
shard), ``loop_config.json`` (what every rank gets; ``harness_torch`` runs it without Ray), ``ray/``
(Ray Train's run and DeepSpeed checkpoints), ``metrics.jsonl``, ``events.jsonl``, ``final/``
(safetensors HF checkpoint in ``train.export_dtype`` that transformers and vLLM load) and, last,
``manifest.json``.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import time
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from upft_ray.config import PipelineConfig, config_to_dict
from upft_ray.models import resolve_model
from upft_ray.schema import config_hash, package_versions, read_json, write_json_atomic
from upft_ray.training.examples import example_parts, tokenize_shards
from upft_ray.training.export import resolve_export_dtype
from upft_ray.training.harness_ray import train_loop_per_worker
from upft_ray.training.loop import plan_epochs
from upft_ray.training.packing import epoch_rows, packing_efficiency

RUN_NAME = "upft-train"


def export_hf_checkpoint(checkpoint_dir: Path, model_path: str, out_dir: Path, zero_stage: int | None = None,
                         dtype: str = "float32") -> Path:
    """Write the weights in a DeepSpeed checkpoint as an HF safetensors checkpoint in ``dtype``; return ``out_dir``.

    Streams from the checkpoint files (see ``export.py``: peak memory about one chunk, not the model);
    ``zero_stage`` is read from the checkpoint and kept only for callers that pass it."""
    from upft_ray.training.export import export_hf_checkpoint as stream_export

    return stream_export(Path(checkpoint_dir), model_path, Path(out_dir), dtype)


def trained_model_dir(cfg: PipelineConfig) -> Path:
    """Return ``RUN/train/final``, the HF export of the fine-tuned model."""
    return cfg.run_path / "train" / "final"


def checkpoints_dir(cfg: PipelineConfig) -> Path:
    """Return ``RUN/train/ray``, Ray Train's storage: the run's checkpoints (weights and optimizer states)."""
    return cfg.run_path / "train" / "ray"


def _examples_key(cfg: PipelineConfig, model_path: str, shards: list[Path]) -> dict:
    """Return what the tokenised examples depend on; a different key means they are rebuilt."""
    return {"model_path": model_path, "max_length": cfg.train.max_length,
            "sample_config_hash": read_json(cfg.run_path / "sample" / "manifest.json")["config_hash"],
            "shards": [[s.name, s.stat().st_size] for s in shards], "filter": "correct-v1",
            "prefix_eos": cfg.train.prefix_eos}


def sampled_prefix_tokens(sample_manifest: dict) -> int:
    """Return the prefix length the sample stage used (``prefix_tokens: auto`` resolved)."""
    return int(sample_manifest.get("prefix_tokens", sample_manifest["config"]["prefix_tokens"]))


def prepare_examples(cfg: PipelineConfig, model_path: str) -> tuple[Path, dict]:
    """Tokenise the sample shards into ``RUN/train/examples/part-*.parquet`` with Ray Data; return (dir, counts).

    One part per sample shard, written by parallel Ray tasks; a finished set (``_done.json``
    matching model, max_length and shards) is reused, so a rerun after a crash does not tokenise
    again."""
    import ray.data
    from transformers import AutoTokenizer

    shards_dir = cfg.run_path / "sample" / "shards"
    sample_manifest = read_json(cfg.run_path / "sample" / "manifest.json")  # the sample stage must have finished
    method = sample_manifest["config"]["method"]
    shards = sorted(shards_dir.glob("*.parquet"))
    if not shards:
        raise ValueError(f"no sampled rows in {shards_dir}: every question was rejected (see "
                         f"{cfg.run_path / 'sample' / 'rejected.parquet'})")
    out_dir = cfg.run_path / "train" / "examples"
    done = out_dir / "_done.json"
    key = _examples_key(cfg, model_path, shards)
    if not (done.is_file() and read_json(done)["key"] == key):
        shutil.rmtree(out_dir, ignore_errors=True)
        out_dir.mkdir(parents=True)
        items = [{"shard": str(s), "out": str(out_dir / f"part-{s.stem}.parquet")} for s in shards]
        print(f"[train] tokenising {len(shards)} sample shard(s) into {out_dir}")
        per_part = (ray.data.from_items(items)
                    .map_batches(tokenize_shards, batch_size=1,
                                 fn_kwargs={"model_path": model_path, "max_length": cfg.train.max_length,
                                            "prefix_tokens": sampled_prefix_tokens(sample_manifest),
                                            "correct_only": method in ("rft", "label_filter"),
                                            "prefix_eos": cfg.train.prefix_eos})
                    .take_all())
        write_json_atomic(done, {"key": key, "rows_in": sum(p["rows_in"] for p in per_part),
                                 "incorrect": sum(p["incorrect"] for p in per_part)})
    done_counts = read_json(done)
    rows_in, incorrect = done_counts["rows_in"], done_counts.get("incorrect", 0)
    table = pq.read_table(example_parts(out_dir), columns=["kind", "num_prompt_tokens", "num_response_tokens",
                                                           "num_masked_tail", "truncated"])
    if table.num_rows == 0:
        raise ValueError(f"no training example left in {out_dir}: of {rows_in} sampled rows, {incorrect} were graded "
                         f"incorrect (method {method}) and {rows_in - incorrect} had no response token within "
                         f"train.max_length")
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    counts = {
        "method": method,
        "rows_in": rows_in,
        "examples": table.num_rows,
        "rows_dropped_incorrect": incorrect,
        "rows_dropped_no_response_token": rows_in - incorrect - table.num_rows,
        "examples_truncated": int(pc.sum(table["truncated"]).as_py() or 0),
        "prefix_examples": int(pc.sum(pc.equal(table["kind"], "prefix")).as_py() or 0),
        "full_examples": int(pc.sum(pc.equal(table["kind"], "full")).as_py() or 0),
        "tokens_tuned": int(pc.sum(pc.subtract(table["num_response_tokens"], table["num_masked_tail"])).as_py() or 0),
        "tokens_total": int(pc.sum(pc.add(table["num_prompt_tokens"], table["num_response_tokens"])).as_py() or 0),
        "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    }
    return out_dir, counts


def example_lengths(examples_dir: Path):
    """Return every example's token count (prompt + response), in the order the workers index them."""
    table = pq.read_table(example_parts(examples_dir), columns=["num_prompt_tokens", "num_response_tokens"])
    return pc.add(table["num_prompt_tokens"], table["num_response_tokens"]).to_numpy()


def loop_config(cfg: PipelineConfig, model_path: str, examples_dir: Path, pad_token_id: int) -> dict:
    """Return the plain dict every training rank gets (Ray Train workers, or torchrun via loop_config.json)."""
    t = cfg.train
    return {
        "train": config_to_dict(t),
        "seed": cfg.seed,
        "model_path": model_path,
        "examples_dir": str(examples_dir),
        "metrics_path": str(cfg.run_path / "train" / "metrics.jsonl"),
        "events_path": str(cfg.run_path / "train" / "events.jsonl"),
        "tensorboard_dir": str(cfg.run_path / "train" / "tensorboard") if t.tensorboard else None,
        "pad_token_id": pad_token_id,
    }


def build_trainer(cfg: PipelineConfig, model_path: str, examples_dir: Path, pad_token_id: int):
    """Return the Ray Train TorchTrainer for this run (not started), for inspection or ``fit()``."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    t = cfg.train
    resources = {"CPU": t.cpus_per_worker}
    if t.use_gpu:
        resources["GPU"] = 1
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config(cfg, model_path, examples_dir, pad_token_id),
        scaling_config=ScalingConfig(num_workers=t.num_workers, use_gpu=t.use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=RUN_NAME,
            storage_path=str(checkpoints_dir(cfg)),
            checkpoint_config=CheckpointConfig(num_to_keep=t.keep_last_k),
            failure_config=FailureConfig(max_failures=t.max_failures),
        ),
    )


def claim_train_dir(cfg: PipelineConfig, run_hash: str) -> None:
    """Record which config owns ``RUN/train/``; refuse a different config on a directory with checkpoints.

    Ray Train resumes a run whose name and storage path exist, so rerunning the same command after
    a crash continues from the last checkpoint. Resuming a *different* config from those weights
    would silently mix two runs; that is an error instead. A run that stopped before its first
    checkpoint holds nothing to resume: its Ray Train directory is cleared, so the corrected
    command can start."""
    owner = cfg.run_path / "train" / "run_config.json"
    ray_dir = checkpoints_dir(cfg)
    previous = read_json(owner).get("config_hash") if owner.is_file() else "unknown"
    if ray_dir.exists() and previous != run_hash:
        if any(p.is_dir() and p.name.startswith("checkpoint_") for p in ray_dir.glob("*/*")):
            raise ValueError(f"{cfg.run_path / 'train'} holds a training run with another config "
                             f"(hash {previous}, now {run_hash}); use a new run_dir or delete that directory")
        shutil.rmtree(ray_dir)  # no checkpoint: nothing of the other config's training survives
    write_json_atomic(owner, {"config_hash": run_hash})


def _resumed_steps(events: Path) -> list[int]:
    """Return the steps this run resumed from (after worker failures or a rerun), in order."""
    if not events.is_file():
        return []
    return [json.loads(line)["step"] for line in events.read_text().splitlines() if '"resumed"' in line]


def run_train(cfg: PipelineConfig) -> dict:
    """Run the training stage; return the manifest written to ``RUN/train/manifest.json``.

    Raises FileNotFoundError when the sample stage has not run, ValueError when there are fewer
    examples than one global batch."""
    started = time.time()
    t = cfg.train
    model_path = resolve_model(cfg.model)
    train_dir = cfg.run_path / "train"
    train_cfg = config_to_dict(t)
    sample_hash = read_json(cfg.run_path / "sample" / "manifest.json")["config_hash"]
    run_hash = config_hash({"model": cfg.model, "seed": cfg.seed, "sample": sample_hash, **train_cfg})
    if t.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ValueError("train.tensorboard: the tensorboard package is not installed (pip install tensorboard)")
    claim_train_dir(cfg, run_hash)
    examples_dir, counts = prepare_examples(cfg, model_path)
    rows_per_step = t.micro_batch_size * t.gradient_accumulation_steps * t.num_workers
    lengths = example_lengths(examples_dir)
    pack_length = t.max_length if t.packing else 0
    epoch_steps = plan_epochs(lengths, cfg.seed, t.epochs, pack_length, rows_per_step)
    first_rows = epoch_rows(lengths, cfg.seed, 0, pack_length)
    counts.update(rows_per_step=rows_per_step, rows_first_epoch=len(first_rows), steps=sum(epoch_steps),
                  rows_dropped_last_step_first_epoch=len(first_rows) - epoch_steps[0] * rows_per_step)
    if t.packing:
        counts["packing_efficiency"] = round(packing_efficiency(first_rows, lengths, t.max_length), 4)
    if counts["steps"] == 0:
        raise ValueError(f"{counts['examples']} training examples make {len(first_rows)} rows, fewer than one "
                         f"optimizer step ({rows_per_step} = micro_batch_size x gradient_accumulation_steps x "
                         f"num_workers)")
    print(f"[train] {counts['examples']} examples ({counts['prefix_examples']} prefix, {counts['full_examples']} "
          f"full), {counts['tokens_tuned']} tokens tuned; {len(first_rows)} rows"
          f"{' (packed, efficiency ' + str(counts['packing_efficiency']) + ')' if t.packing else ''}; "
          f"{counts['steps']} steps over {t.epochs} epoch(s), {t.num_workers} workers, ZeRO-{t.zero_stage}")
    pad_token_id = counts.pop("pad_token_id")
    # The same loop runs without Ray: torchrun -m upft_ray.training.harness_torch RUN/train/loop_config.json ...
    write_json_atomic(train_dir / "loop_config.json", loop_config(cfg, model_path, examples_dir, pad_token_id))
    result = build_trainer(cfg, model_path, examples_dir, pad_token_id).fit()
    if result.checkpoint is None:
        raise RuntimeError(f"training finished without a checkpoint (error: {result.error})")
    with result.checkpoint.as_directory() as ckpt_dir:
        final = export_hf_checkpoint(Path(ckpt_dir), model_path, train_dir / "final",
                                     dtype=resolve_export_dtype(train_cfg))
    manifest = {
        "stage": "train",
        "model": cfg.model,
        "base_model_path": model_path,
        "seed": cfg.seed,
        "config": train_cfg,
        "config_hash": run_hash,
        "counts": counts,
        "resumed_at_steps": _resumed_steps(train_dir / "events.jsonl"),
        "checkpoint": result.checkpoint.path,
        "final_model": str(final),
        "export_dtype": resolve_export_dtype(train_cfg),
        "versions": package_versions(),
        "wall_time_s": round(time.time() - started, 2),
    }
    write_json_atomic(train_dir / "manifest.json", manifest)
    print(f"[train] done in {manifest['wall_time_s']:.1f}s; HF export at {final}")
    return manifest
