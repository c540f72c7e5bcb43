"""The training plan: which rows each optimizer step and rank sees, the LR schedule, the DeepSpeed config.

The loop itself is ``recipe.Recipe`` (run by ``harness_ray`` under Ray Train or ``harness_torch``
under torchrun / one process); what every rank gets is a :class:`LoopConfig`. Data order is a pure function of (seed, epoch, step): each epoch's rows come from
``packing.epoch_rows`` (a seeded permutation, packed or not); optimizer step k of an epoch takes the
k-th block of ``micro x accumulation x world`` rows, and rank r's micro-batch m is a fixed slice of
it. A worker restarted from a checkpoint at step s (model, optimizer, scheduler, RNG restored)
therefore continues with exactly the rows an uninterrupted run would have seen: nothing is trained
twice or skipped, and the final weights are the same.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, ConfigDict

from upft_ray.config import TrainConfig
from upft_ray.runtime.hardware import bf16_is_fast
from upft_ray.training.packing import epoch_rows


class LoopConfig(BaseModel):
    """What every training rank gets (Ray Train workers, or torchrun via ``RUN/train/loop_config.json``)."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    train: TrainConfig
    seed: int
    model_path: str
    examples_dir: str
    metrics_path: str
    events_path: str
    tensorboard_dir: str | None
    pad_token_id: int


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
    if precision != "auto":
        return precision
    return "bf16" if bf16_is_fast(use_gpu) else "fp32"


def deepspeed_config(cfg: TrainConfig, world: int, precision: str) -> dict:
    """Return the DeepSpeed config for training ``cfg`` on ``world`` ranks in ``precision`` (bf16 or fp32)."""
    zero: dict = {"stage": cfg.zero_stage}
    if cfg.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    return {
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "train_batch_size": cfg.micro_batch_size * cfg.gradient_accumulation_steps * world,
        "zero_optimization": zero,
        "bf16": {"enabled": precision == "bf16"},
        "gradient_clipping": cfg.max_grad_norm,
        # torch_adam: the fused Adam kernel would be compiled at start-up (minutes) for no gain here;
        # with optimizer offload DeepSpeed's CPU Adam runs the step instead.
        "optimizer": {"type": "AdamW", "params": {"lr": cfg.learning_rate, "weight_decay": cfg.weight_decay,
                                                  "betas": [cfg.adam_beta1, cfg.adam_beta2],
                                                  "torch_adam": not cfg.offload_optimizer}},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }
