"""The per-worker training loop: DeepSpeed ZeRO on a Ray Train worker, resumable from checkpoints.

Data order is a pure function of (seed, epoch, step): each epoch's rows come from
``packing.epoch_rows`` (a seeded permutation, packed or not); optimizer step k of an epoch takes the
k-th block of ``micro x accumulation x world`` rows, and rank r's micro-batch m is a fixed slice of
it. A worker restarted from a checkpoint at step s (model, optimizer, scheduler, RNG restored)
therefore continues with exactly the rows an uninterrupted run would have seen: nothing is trained
twice or skipped, and the final weights are the same.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from upft_ray.training.examples import example_parts
from upft_ray.training.objective import forward_logits, global_normaliser, summed_loss
from upft_ray.training.packing import ExampleStore, collate_rows, epoch_rows


def plan_epochs(lengths: np.ndarray, seed: int, epochs: int, pack_length: int, rows_per_step: int) -> list[int]:
    """Return the optimizer steps of each epoch (the last incomplete block of rows is dropped)."""
    return [len(epoch_rows(lengths, seed, e, pack_length)) // rows_per_step for e in range(epochs)]


def step_rows(rows: list[list[int]], step_in_epoch: int, rows_per_step: int) -> list[list[int]]:
    """Return the rows of one optimizer step."""
    return rows[step_in_epoch * rows_per_step:(step_in_epoch + 1) * rows_per_step]


def micro_batch_rows(rows_of_step: list[list[int]], rank: int, world: int, micro: int, m: int) -> list[list[int]]:
    """Return rank ``rank``'s ``m``-th micro-batch out of one optimizer step's rows."""
    start = (m * world + rank) * micro
    return rows_of_step[start:start + micro]


def lr_lambda(schedule: str, warmup_steps: int, total_steps: int, min_ratio: float):
    """Return the LR multiplier for step k: linear warm-up, then constant or cosine down to ``min_ratio``.

    Step 0 already trains at lr/warmup_steps (DeepSpeed's WarmupLR would start at 0 and waste it)."""
    def multiplier(k: int) -> float:
        if k < warmup_steps:
            return (k + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        progress = (k - warmup_steps) / max(1, total_steps - warmup_steps - 1)  # the last step ends at min_ratio
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return multiplier


def resolve_precision(precision: str, use_gpu: bool) -> str:
    """Return "bf16" or "fp32" for ``precision`` on this worker's hardware ("auto" picks bf16 only where
    bf16 matmuls are fast: on a CPU without AVX-512 BF16 they run ~30x slower than fp32)."""
    from upft_ray.hardware import bf16_is_fast

    if precision != "auto":
        return precision
    return "bf16" if bf16_is_fast(use_gpu) else "fp32"


def deepspeed_config(cfg: dict, world: int) -> dict:
    """Return the DeepSpeed config for the train section ``cfg`` of a PipelineConfig dict."""
    zero: dict = {"stage": cfg["zero_stage"]}
    if cfg["offload_optimizer"]:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    return {
        "train_micro_batch_size_per_gpu": cfg["micro_batch_size"],
        "gradient_accumulation_steps": cfg["gradient_accumulation_steps"],
        "train_batch_size": cfg["micro_batch_size"] * cfg["gradient_accumulation_steps"] * world,
        "zero_optimization": zero,
        "bf16": {"enabled": cfg["precision"] == "bf16"},
        "gradient_clipping": cfg["max_grad_norm"],
        # torch_adam: the fused Adam kernel would be compiled at start-up (minutes) for no gain here;
        # with optimizer offload DeepSpeed's CPU Adam runs the step instead.
        "optimizer": {"type": "AdamW", "params": {"lr": cfg["learning_rate"], "weight_decay": cfg["weight_decay"],
                                                  "torch_adam": not cfg["offload_optimizer"]}},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }


def _set_dist_env(ctx) -> None:
    # DeepSpeed reads the rank layout from the environment; Ray Train keeps it in its context.
    os.environ["RANK"] = str(ctx.get_world_rank())
    os.environ["WORLD_SIZE"] = str(ctx.get_world_size())
    os.environ["LOCAL_RANK"] = str(ctx.get_local_rank())
    os.environ["LOCAL_WORLD_SIZE"] = str(ctx.get_local_world_size())


def say(message: str) -> None:
    """Print one line from a train worker exactly once (Ray Train's patched ``print`` would also send
    it through its logger, and the driver would show every line twice)."""
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def _rng_state() -> dict:
    import torch

    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _set_rng_state(state: dict) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


class MetricsLog:
    """Rank 0's per-step metrics: console line, ``metrics.jsonl`` and TensorBoard when enabled."""

    def __init__(self, path: str, tensorboard_dir: str | None, resumed_step: int):
        self.path = Path(path)
        self.start_step, self.started = resumed_step, time.time()
        if self.path.is_file():  # steps after the checkpoint we resume from are redone: drop their rows
            kept = [line for line in self.path.read_text().splitlines() if json.loads(line)["step"] <= resumed_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        self.writer = None
        if tensorboard_dir:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(tensorboard_dir)

    def write(self, row: dict, total_steps: int) -> None:
        per_step = (time.time() - self.started) / max(1, row["step"] - self.start_step)
        say(f"[train] step {row['step']}/{total_steps} loss {row['loss']:.4f} lr {row['lr']:.2e} "
            f"grad_norm {row['grad_norm']:.3f} tok/s {row['tokens_per_s']:.0f} "
            f"ETA {per_step * (total_steps - row['step']):.0f}s")
        with self.path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        if self.writer is not None:
            for key in ("loss", "lr", "grad_norm", "tokens_per_s"):
                self.writer.add_scalar(f"train/{key}", row[key], row["step"])
            self.writer.flush()


def train_loop_per_worker(config: dict) -> None:
    """Ray Train entry point: train config["train"] on the parts in config["examples_dir"]; report checkpoints."""
    import ray.train
    import torch

    cfg = config["train"]
    if not cfg["use_gpu"]:
        from upft_ray.ray_runtime import torch_extensions_dir

        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        # Workers of a joined cluster do not get the local session's env: find the op set-up compiled.
        os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(torch_extensions_dir()))
    import deepspeed
    import torch.distributed as dist
    from transformers import AutoModelForCausalLM

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    _set_dist_env(ctx)
    deepspeed.init_distributed(dist_backend="nccl" if cfg["use_gpu"] else "gloo")
    seed = config["seed"]
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)

    store = ExampleStore.from_parts(example_parts(Path(config["examples_dir"])))
    micro, accum = cfg["micro_batch_size"], cfg["gradient_accumulation_steps"]
    rows_per_step = micro * accum * world
    pack_length = cfg["max_length"] if cfg["packing"] else 0
    epoch_steps = plan_epochs(store.lengths, seed, cfg["epochs"], pack_length, rows_per_step)
    total_steps = sum(epoch_steps)

    cfg = {**cfg, "precision": resolve_precision(cfg["precision"], cfg["use_gpu"])}
    if rank == 0:
        say(f"[train] precision {cfg['precision']}")
    dtype = torch.bfloat16 if cfg["precision"] == "bf16" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(config["model_path"], dtype=dtype)
    if cfg["gradient_checkpointing"]:
        model.gradient_checkpointing_enable()
    schedule = lr_lambda(cfg["lr_schedule"], math.ceil(cfg["warmup_ratio"] * total_steps), total_steps,
                         cfg["min_lr_ratio"])
    engine, _, _, _ = deepspeed.initialize(
        model=model, model_parameters=model.parameters(), config=deepspeed_config(cfg, world),
        lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, schedule),
    )

    step, consumed = 0, 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as ckpt_dir:
            _, client_state = engine.load_checkpoint(ckpt_dir)
            _set_rng_state(torch.load(Path(ckpt_dir) / f"rng_rank{rank}.pt", weights_only=False))
        step, consumed = client_state["step"], client_state["consumed_examples"]
        if rank == 0:
            say(f"[train] resumed from checkpoint at step {step}/{total_steps}")
            with open(config["events_path"], "a") as fh:  # an audit trail of restarts, beside the metrics
                fh.write(json.dumps({"event": "resumed", "step": step, "time": time.time()}) + "\n")
    log = MetricsLog(config["metrics_path"], config["tensorboard_dir"], step) if rank == 0 else None

    mode, pad_id = cfg["loss_normalization"], config["pad_token_id"]
    rows, rows_epoch = None, -1
    tokens_since, t_last = 0, time.time()
    engine.train()
    while step < total_steps:
        epoch = int(np.searchsorted(np.cumsum(epoch_steps), step, side="right"))
        if epoch != rows_epoch:
            rows, rows_epoch = epoch_rows(store.lengths, seed, epoch, pack_length), epoch
        rows_of_step = step_rows(rows, step - sum(epoch_steps[:epoch]), rows_per_step)
        normaliser = global_normaliser(rows_of_step, store, mode)
        loss_sum = torch.zeros((), dtype=torch.float64)
        for m in range(accum):
            micro_rows = micro_batch_rows(rows_of_step, rank, world, micro, m)
            batch = collate_rows(micro_rows, store, pad_id)
            input_ids, position_ids, labels, example_ids = (t.to(engine.device) for t in batch)
            logits = forward_logits(engine, input_ids, position_ids)
            part = summed_loss(logits, labels, example_ids, mode)
            # DeepSpeed divides by accumulation steps and averages over ranks: undo both, so the
            # gradient is that of (sum over the global batch) / normaliser.
            engine.backward(part * (world * accum / normaliser))
            engine.step()
            loss_sum += part.detach().double().cpu()
            tokens_since += sum(int(store.lengths[r].sum()) for r in micro_rows)  # real tokens, no padding
        step += 1
        consumed += sum(len(r) for r in rows_of_step)
        dist.all_reduce(loss_sum)  # every rank, every step: the logged loss is the global one
        if step % cfg["log_every_steps"] == 0 or step == total_steps:
            elapsed = max(time.time() - t_last, 1e-9)
            tokens = torch.tensor([tokens_since], dtype=torch.float64)
            dist.all_reduce(tokens)
            if log is not None:
                log.write({"step": step, "epoch": epoch, "loss": float(loss_sum) / normaliser,
                           "lr": engine.get_lr()[0], "grad_norm": _grad_norm(engine),
                           "tokens_per_s": float(tokens) / elapsed, "loss_normaliser": normaliser,
                           "consumed_rows": step * rows_per_step, "consumed_examples": consumed}, total_steps)
            tokens_since, t_last = 0, time.time()
        every = cfg["checkpoint_every_steps"]
        if step == total_steps or (every and step % every == 0):
            _report_checkpoint(engine, rank, {"step": step, "consumed_examples": consumed,
                                              "consumed_rows": step * rows_per_step, "total_steps": total_steps})


def _grad_norm(engine) -> float:
    norm = engine.get_global_grad_norm()
    return float(norm) if norm is not None else float("nan")


def _report_checkpoint(engine, rank: int, client_state: dict) -> None:
    """Save DeepSpeed state and this rank's RNG on every rank and report it; Ray Train merges the files
    and registers the checkpoint only once every rank has reported it (a half-saved one is never used)."""
    import ray.train
    import torch

    tmp = Path(tempfile.mkdtemp(prefix="upft-ckpt-"))
    engine.save_checkpoint(str(tmp), tag=f"step_{client_state['step']:08d}", client_state=client_state)
    torch.save(_rng_state(), tmp / f"rng_rank{rank}.pt")
    if rank == 0:
        (tmp / "upft_state.json").write_text(json.dumps(client_state))
    ray.train.report({k: client_state[k] for k in ("step", "consumed_examples")},
                     checkpoint=ray.train.Checkpoint.from_directory(str(tmp)))
    shutil.rmtree(tmp, ignore_errors=True)
