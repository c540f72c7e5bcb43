"""The training plan: which rows each optimizer step and rank sees, the LR schedule, the DeepSpeed config.

The loop itself is ``recipe.Recipe`` (run by ``harness_ray`` under Ray Train or ``harness_torch``
under torchrun / one process); what every rank gets is a :class:`LoopConfig`. Data order is a pure
function of (seed, step): each epoch's rows come from ``packing.epoch_rows`` (a seeded permutation,
packed or not) and a :class:`StepPlan` says which rows of which epochs optimizer step k takes, a block
of ``micro x accumulation x world`` rows; rank r's micro-batch m is a fixed slice of it. With
``train.epoch_tail`` ``drop`` (the default) step k of an epoch takes that epoch's k-th block and the
epoch's last incomplete block is never trained; with ``carry`` the blocks are cut from the epochs' rows
laid end to end (as the official trainer's micro-batch stream runs on across epochs), so an epoch's
tail opens the next epoch's first step and only the run's final leftover is never trained. A worker
restarted from a checkpoint at step s (model, optimizer, scheduler, RNG restored) therefore continues
with exactly the rows an uninterrupted run would have seen: nothing is trained twice or skipped, and
the final weights are the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict

from upft_ray.config import TrainConfig
from upft_ray.runtime.hardware import bf16_is_fast
from upft_ray.training.memory import MemoryPlan, plan_memory
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


@dataclass(frozen=True)
class StepPlan:
    """Which rows of which epochs each optimizer step trains on (see the module docstring)."""
    epoch_rows: tuple[int, ...]  # rows in each epoch (with packing they differ from epoch to epoch)
    rows_per_step: int
    tail: str = "drop"  # train.epoch_tail: "drop" or "carry"

    @property
    def total_steps(self) -> int:
        """Return the optimizer steps of the whole run."""
        if self.tail == "carry":
            return sum(self.epoch_rows) // self.rows_per_step
        return sum(n // self.rows_per_step for n in self.epoch_rows)

    @property
    def rows_trained(self) -> int:
        """Return the rows trained over the whole run (every epoch's rows = trained + dropped)."""
        return self.total_steps * self.rows_per_step

    def dropped_per_epoch(self) -> list[int]:
        """Return the rows of each epoch that no step trains on."""
        if self.tail != "carry":
            return [n % self.rows_per_step for n in self.epoch_rows]
        out, before = [], 0  # carry: the steps train the first rows_trained rows of the epochs laid end to end
        for n in self.epoch_rows:
            out.append(n - min(n, max(0, self.rows_trained - before)))
            before += n
        return out

    def spans(self, step: int) -> list[tuple[int, int, int]]:
        """Return the (epoch, start, stop) slices of the epochs' rows that make optimizer step ``step``, in order."""
        size = self.rows_per_step
        if self.tail != "carry":
            for epoch, n in enumerate(self.epoch_rows):
                if step < n // size:
                    return [(epoch, step * size, (step + 1) * size)]
                step -= n // size
            raise IndexError("step beyond the plan")
        begin, end, before, out = step * size, (step + 1) * size, 0, []
        for epoch, n in enumerate(self.epoch_rows):
            if max(begin, before) < min(end, before + n):
                out.append((epoch, max(begin, before) - before, min(end, before + n) - before))
            before += n
        return out

    def epoch_of(self, step: int) -> int:
        """Return the epoch that optimizer step ``step`` ends in (the epoch of its last row)."""
        return self.spans(step)[-1][0]


def plan_epochs(lengths: np.ndarray, seed: int, epochs: int, pack_length: int, rows_per_step: int,
                tail: str = "drop") -> StepPlan:
    """Return the step plan of ``epochs`` passes over the examples of ``lengths`` (``tail``: train.epoch_tail)."""
    counts = tuple(len(epoch_rows(lengths, seed, e, pack_length)) for e in range(epochs))
    return StepPlan(counts, rows_per_step, tail)


class StepRows:
    """The rows of each optimizer step; every epoch's seeded rows are built once and kept while steps need them."""

    def __init__(self, plan: StepPlan, lengths: np.ndarray, seed: int, pack_length: int):
        self.plan, self.lengths, self.seed, self.pack_length = plan, lengths, seed, pack_length
        self._epochs: dict[int, list[list[int]]] = {}

    def __call__(self, step: int) -> list[list[int]]:
        """Return the rows of optimizer step ``step`` (a pure function of seed and step)."""
        spans = self.plan.spans(step)
        # A step spans at most a few epochs: keep those (built once each), free the ones behind.
        self._epochs = {e: self._epochs.get(e) or epoch_rows(self.lengths, self.seed, e, self.pack_length)
                        for e, _, _ in spans}
        return [row for e, start, stop in spans for row in self._epochs[e][start:stop]]


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
    bf16 matmuls are fast: on a CPU without AVX-512 BF16 they run many times slower than fp32)."""
    if precision != "auto":
        return precision
    return "bf16" if bf16_is_fast(use_gpu) else "fp32"


def adamw_params(cfg: TrainConfig, offload: bool) -> dict:
    """Return the AdamW parameters of the DeepSpeed config: torch's AdamW (``torch_adam``; DeepSpeed's own
    fused Adam would be compiled at start-up, minutes), with its fused step on GPUs (the unfused one took ~57 ms
    of a 150-176 ms 0.5B step on an H100); with optimizer ``offload`` DeepSpeed's CPU Adam runs the step instead."""
    params = {"lr": cfg.learning_rate, "weight_decay": cfg.weight_decay, "betas": [cfg.adam_beta1, cfg.adam_beta2],
              "torch_adam": not offload}
    if cfg.use_gpu and not offload:
        params["fused"] = True  # same update, one kernel; CPU runs keep the loop they were recorded with
    return params


def deepspeed_config(cfg: TrainConfig, world: int, precision: str, plan: MemoryPlan | None = None) -> dict:
    """Return the DeepSpeed config for training ``cfg`` on ``world`` ranks in ``precision`` (bf16 or fp32), with
    the ZeRO stage and offload of ``plan`` (by default ``cfg``'s, ``auto`` decided without device memory)."""
    plan = plan or plan_memory(cfg.zero_stage, cfg.offload_optimizer, world)
    zero: dict = {"stage": plan.zero_stage}
    if plan.offload:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    return {
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "train_batch_size": cfg.micro_batch_size * cfg.gradient_accumulation_steps * world,
        "zero_optimization": zero,
        "bf16": {"enabled": precision == "bf16"},
        "gradient_clipping": cfg.max_grad_norm,
        "optimizer": {"type": "AdamW", "params": adamw_params(cfg, plan.offload)},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }
