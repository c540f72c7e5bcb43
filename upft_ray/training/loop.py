"""The per-worker training loop: DeepSpeed ZeRO on a Ray Train worker, resumable from checkpoints.

Data order is a pure function of (seed, epoch, step): each epoch is a seeded permutation of the
examples; optimizer step k of an epoch takes the k-th global batch, and rank r's micro-batch m is
a fixed slice of it. A worker restarted from a checkpoint at step s therefore continues with exactly
the batches an uninterrupted run would have seen, and no example is trained twice or skipped.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

IGNORE_INDEX = -100


def batch_plan(num_examples: int, seed: int, epoch: int, global_batch: int) -> np.ndarray:
    """Return the example indices of each optimizer step of ``epoch``: shape (steps, global_batch).

    The last incomplete global batch is dropped (the caller reports how many rows that is)."""
    order = np.random.default_rng(seed + epoch).permutation(num_examples)
    steps = num_examples // global_batch
    return order[: steps * global_batch].reshape(steps, global_batch)


def micro_batch_indices(step_indices: np.ndarray, rank: int, world: int, micro: int, m: int) -> np.ndarray:
    """Return rank ``rank``'s ``m``-th micro-batch out of one optimizer step's indices."""
    start = (m * world + rank) * micro
    return step_indices[start : start + micro]


def collate(examples: list[dict], pad_id: int):
    """Return (input_ids, attention_mask, labels) tensors, right-padded; prompt and pad masked."""
    import torch

    width = max(len(e["input_ids"]) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        ids = torch.tensor(e["input_ids"], dtype=torch.long)
        input_ids[i, : len(ids)] = ids
        mask[i, : len(ids)] = 1
        labels[i, e["num_prompt_tokens"] : len(ids)] = ids[e["num_prompt_tokens"] :]
    return input_ids, mask, labels


def deepspeed_config(cfg: dict, world: int) -> dict:
    """Return the DeepSpeed config for the train section ``cfg`` of a PipelineConfig dict."""
    return {
        "train_micro_batch_size_per_gpu": cfg["micro_batch_size"],
        "gradient_accumulation_steps": cfg["gradient_accumulation_steps"],
        "train_batch_size": cfg["micro_batch_size"] * cfg["gradient_accumulation_steps"] * world,
        "zero_optimization": {"stage": cfg["zero_stage"]},
        "bf16": {"enabled": cfg["precision"] == "bf16"},
        "gradient_clipping": 1.0,
        # torch_adam: the fused Adam kernel would be compiled at start-up (minutes) for no gain here.
        "optimizer": {"type": "AdamW", "params": {"lr": cfg["learning_rate"],
                                                  "weight_decay": cfg["weight_decay"], "torch_adam": True}},
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }


def warmup_then_constant(warmup_steps: int):
    """Return the LR multiplier for step k: linear warm-up over ``warmup_steps``, then 1.

    Step 0 already trains at lr/warmup_steps (DeepSpeed's WarmupLR would start at 0 and waste it)."""
    return lambda k: min(1.0, (k + 1) / max(1, warmup_steps))


def _set_dist_env(ctx) -> None:
    # DeepSpeed reads the rank layout from the environment; Ray Train keeps it in its context.
    os.environ["RANK"] = str(ctx.get_world_rank())
    os.environ["WORLD_SIZE"] = str(ctx.get_world_size())
    os.environ["LOCAL_RANK"] = str(ctx.get_local_rank())
    os.environ["LOCAL_WORLD_SIZE"] = str(ctx.get_local_world_size())


def train_loop_per_worker(config: dict) -> None:
    """Ray Train entry point: train config["train"] on config["examples_path"]; report checkpoints."""
    import ray.train
    import torch

    cfg = config["train"]
    if not cfg["use_gpu"]:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed
    import pyarrow.parquet as pq
    from transformers import AutoModelForCausalLM

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    _set_dist_env(ctx)
    deepspeed.init_distributed(dist_backend="nccl" if cfg["use_gpu"] else "gloo")
    torch.manual_seed(config["seed"])

    examples = pq.read_table(config["examples_path"]).to_pylist()
    micro, accum = cfg["micro_batch_size"], cfg["gradient_accumulation_steps"]
    global_batch = micro * accum * world
    steps_per_epoch = len(examples) // global_batch
    total_steps = steps_per_epoch * cfg["epochs"]

    dtype = torch.bfloat16 if cfg["precision"] == "bf16" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(config["model_path"], dtype=dtype)
    if cfg["gradient_checkpointing"]:
        model.gradient_checkpointing_enable()
    warmup_steps = math.ceil(cfg["warmup_ratio"] * total_steps)
    engine, _, _, _ = deepspeed.initialize(
        model=model, model_parameters=model.parameters(), config=deepspeed_config(cfg, world),
        lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, warmup_then_constant(warmup_steps)),
    )

    step = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as ckpt_dir:
            _, client_state = engine.load_checkpoint(ckpt_dir)
        step = client_state["step"]
        if rank == 0:
            print(f"[train] resumed from checkpoint at step {step}/{total_steps}")

    metrics_file = Path(config["metrics_path"]) if rank == 0 else None
    pad_id = config["pad_token_id"]
    tokens_since, loss_sum, loss_n, t_last = 0, 0.0, 0, time.time()
    engine.train()
    while step < total_steps:
        epoch, step_in_epoch = divmod(step, steps_per_epoch)
        step_indices = batch_plan(len(examples), config["seed"], epoch, global_batch)[step_in_epoch]
        for m in range(accum):
            idx = micro_batch_indices(step_indices, rank, world, micro, m)
            input_ids, mask, labels = collate([examples[i] for i in idx], pad_id)
            input_ids, mask, labels = (t.to(engine.device) for t in (input_ids, mask, labels))
            loss = engine(input_ids=input_ids, attention_mask=mask, labels=labels).loss
            engine.backward(loss)
            engine.step()
            loss_sum += loss.item()
            loss_n += 1
            tokens_since += int(mask.sum())
        step += 1
        if step % cfg["log_every_steps"] == 0 or step == total_steps:
            elapsed = time.time() - t_last
            row = {"step": step, "epoch": epoch, "loss": loss_sum / max(1, loss_n),
                   "lr": engine.get_lr()[0], "grad_norm": _grad_norm(engine),
                   "tokens_per_s_per_worker": tokens_since / max(elapsed, 1e-9),
                   "consumed_samples": step * global_batch}
            if metrics_file is not None:
                print(f"[train] step {step}/{total_steps} loss {row['loss']:.4f} lr {row['lr']:.2e} "
                      f"tok/s/worker {row['tokens_per_s_per_worker']:.0f}", flush=True)
                with metrics_file.open("a") as fh:
                    fh.write(json.dumps(row) + "\n")
            tokens_since, loss_sum, loss_n, t_last = 0, 0.0, 0, time.time()
        every = cfg["checkpoint_every_steps"]
        if step == total_steps or (every and step % every == 0):
            _report_checkpoint(engine, step, global_batch, total_steps)


def _grad_norm(engine) -> float:
    norm = engine.get_global_grad_norm()
    return float(norm) if norm is not None else float("nan")


def _report_checkpoint(engine, step: int, global_batch: int, total_steps: int) -> None:
    """Save DeepSpeed state on every rank and report it; Ray Train merges the ranks' files."""
    import ray.train

    tmp = Path(tempfile.mkdtemp(prefix="upft-ckpt-"))
    client_state = {"step": step, "consumed_samples": step * global_batch}
    engine.save_checkpoint(str(tmp), tag=f"step_{step:08d}", client_state=client_state)
    (tmp / "upft_state.json").write_text(json.dumps({**client_state, "total_steps": total_steps}))
    ray.train.report({"step": step, "consumed_samples": step * global_batch},
                     checkpoint=ray.train.Checkpoint.from_directory(str(tmp)))
    shutil.rmtree(tmp, ignore_errors=True)
