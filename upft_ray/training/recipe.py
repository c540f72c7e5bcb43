"""The training recipe: set-up, fit, save checkpoint. The same code under Ray Train and torchrun.

A harness (``harness_ray`` for Ray Train, ``harness_torch`` for torchrun or one process) knows the
rank layout and where checkpoints go; it builds a :class:`Recipe`, calls ``setup()``, optionally
``load_checkpoint(dir)``, then ``fit(on_checkpoint)``. ``on_checkpoint(client_state)`` is called
on every rank at each checkpoint step; the harness calls ``save_checkpoint(dir)`` there and
commits the checkpoint once every rank has saved.

Every tensor handed to a collective lives on ``self.device`` (a CUDA device under NCCL: NCCL has
no CPU backend). What a rank gets is a typed :class:`upft_ray.training.loop.LoopConfig`.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import random
import time
from pathlib import Path
from typing import Callable

import numpy as np

from upft_ray.runtime.cache import torch_extensions_dir
from upft_ray.training.attention import packed_attention
from upft_ray.training.checkpointing import load_training_state, save_training_state
from upft_ray.training.examples import example_parts
from upft_ray.training.loop import (
    LoopConfig,
    StepRows,
    deepspeed_config,
    lr_lambda,
    micro_batch_rows,
    plan_epochs,
    resolve_precision,
)
from upft_ray.training.memory import enable_checkpointing, plan_memory
from upft_ray.training.metrics import MetricsLog, record_event
from upft_ray.training.objective import chunked_loss_supported, global_normaliser, micro_batch_loss
from upft_ray.training.packing import ExampleStore, collate_rows


def loop_device(use_gpu: bool, local_index: int):
    """Return the torch device of a rank: ``cuda:local_index`` with GPUs, else ``cpu``."""
    import torch  # heavy: loaded on training ranks only

    return torch.device("cuda", local_index) if use_gpu else torch.device("cpu")


def prepare_device(use_gpu: bool, device) -> str:
    """Point torch and DeepSpeed at ``device`` before DeepSpeed starts; return the process-group backend.

    Raises RuntimeError when GPUs are asked for but CUDA is missing, or when DeepSpeed already chose
    another accelerator in this process (its choice is made once, at first use)."""
    import torch  # heavy: loaded on training ranks only

    if use_gpu:
        if not torch.cuda.is_available():
            raise RuntimeError("train.use_gpu is true but torch sees no CUDA device")
        torch.cuda.set_device(device)  # NCCL and DeepSpeed use the current device
        os.environ["DS_ACCELERATOR"] = "cuda"
    else:
        os.environ["DS_ACCELERATOR"] = "cpu"
        # Workers of a joined cluster do not get the local session's env: find the op set-up compiled.
        os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(torch_extensions_dir()))
    from deepspeed.accelerator import get_accelerator  # heavy: loaded on training ranks only

    chosen = get_accelerator().device_name()
    if chosen != device.type:
        raise RuntimeError(f"DeepSpeed uses accelerator {chosen!r} in this process, but the loop runs on "
                           f"{device} (set DS_ACCELERATOR before anything imports deepspeed)")
    return "nccl" if use_gpu else "gloo"


log = logging.getLogger("upft.train")


def choose_loss_path(model) -> str:
    """Return the loss path of ``objective.micro_batch_loss`` for ``model``: ``chunked`` where it supports it,
    else ``reference``; ``UPFT_LOSS_PATH=reference`` forces the old path (for benchmarks of the two)."""
    if os.environ.get("UPFT_LOSS_PATH") == "reference" or not chunked_loss_supported(model):
        return "reference"
    return "chunked"


class Recipe:
    """One rank's training state (engine, examples, step) and the steps that move it forward."""

    def __init__(self, config: LoopConfig, rank: int, world: int, device):
        self.config, self.rank, self.world, self.device = config, rank, world, device
        self.cfg = config.train
        self.precision = resolve_precision(self.cfg.precision, self.cfg.use_gpu)
        self.step, self.consumed = 0, 0
        self.engine = self.store = self.log = None
        self.loss_path = "chunked"  # objective.micro_batch_loss; "reference" where the model needs it

    def setup(self) -> None:
        """Join the process group, load examples and model, build the engine."""
        import deepspeed  # heavy: loaded on training ranks only
        import torch  # heavy: loaded on training ranks only

        backend = prepare_device(self.cfg.use_gpu, self.device)
        # Starts the process group from the env (torchrun), or adopts the one Ray Train started.
        deepspeed.init_distributed(dist_backend=backend)
        seed = self.config.seed
        torch.manual_seed(seed)  # also seeds every CUDA device
        np.random.seed(seed)
        random.seed(seed)
        self._plan()
        if self.rank == 0:
            log.info("precision %s, %d rank(s) on %s (%s)", self.precision, self.world, self.device.type, backend)
        self._build_engine()

    def _plan(self) -> None:
        """Load the examples and plan the steps (a pure function of seed, epochs, batch sizes and epoch_tail)."""
        cfg = self.cfg
        self.store = ExampleStore.from_parts(example_parts(Path(self.config.examples_dir)))
        self.rows_per_step = cfg.micro_batch_size * cfg.gradient_accumulation_steps * self.world
        self.pack_length = cfg.max_length if cfg.packing else 0
        self.plan = plan_epochs(self.store.lengths, self.config.seed, cfg.epochs, self.pack_length,
                                self.rows_per_step, cfg.epoch_tail)
        self.total_steps = self.plan.total_steps

    def _build_engine(self) -> None:
        """Load the model and wrap it in a DeepSpeed engine with AdamW and the LR schedule."""
        import deepspeed  # heavy: loaded on training ranks only
        import torch  # heavy: loaded on training ranks only
        from transformers import AutoModelForCausalLM  # heavy: loaded on training ranks only

        cfg = self.cfg
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
        attention = packed_attention(cfg.use_gpu, cfg.packing, self.device)
        model = AutoModelForCausalLM.from_pretrained(self.config.model_path, dtype=dtype,
                                                     **({"attn_implementation": attention} if attention else {}))
        enable_checkpointing(model, cfg.gradient_checkpointing)
        self.loss_path = choose_loss_path(model)
        device_bytes = torch.cuda.get_device_properties(self.device).total_memory if cfg.use_gpu else None
        plan = plan_memory(cfg.zero_stage, cfg.offload_optimizer, self.world, model.num_parameters(), device_bytes,
                           self.precision == "bf16")
        if self.rank == 0:
            attention = getattr(model.config, "_attn_implementation", None)
            log.info("attention: %s; loss: %s path; ZeRO-%d%s (%s)", attention, self.loss_path, plan.zero_stage,
                     ", optimizer offloaded" if plan.offload else "", plan.why)
            # what `auto` settings became on this hardware: the stage manifest records it (``trained_with``)
            record_event(self.config.events_path, "engine_built", precision=self.precision, world=self.world,
                         device=self.device.type, zero_stage=plan.zero_stage, offload_optimizer=plan.offload,
                         attention=attention, loss_path=self.loss_path)
        schedule = lr_lambda(cfg.lr_schedule, math.ceil(cfg.warmup_ratio * self.total_steps), self.total_steps,
                             cfg.min_lr_ratio)
        self.engine, _, _, _ = deepspeed.initialize(
            model=model, model_parameters=model.parameters(),
            config=deepspeed_config(cfg, self.world, self.precision, plan),
            lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, schedule),
        )
        if torch.device(self.engine.device).type != self.device.type:
            raise RuntimeError(f"DeepSpeed placed the model on {self.engine.device}, the loop runs on {self.device}")

    def load_checkpoint(self, directory) -> None:
        """Resume weights, optimizer, scheduler, RNG and progress from a checkpoint directory."""
        state = load_training_state(self.engine, Path(directory), self.rank, self.device)
        self.step, self.consumed = state["step"], state["consumed_examples"]
        if self.rank == 0:
            log.info("resumed from checkpoint at step %d/%d", self.step, self.total_steps)
            record_event(self.config.events_path, "resumed", step=self.step)

    def client_state(self) -> dict:
        """Return the progress saved with a checkpoint."""
        return {"step": self.step, "consumed_examples": self.consumed,
                "consumed_rows": self.step * self.rows_per_step, "total_steps": self.total_steps}

    def save_checkpoint(self, directory) -> dict:
        """Write this rank's part of a checkpoint into ``directory``; return its client state."""
        state = self.client_state()
        save_training_state(self.engine, Path(directory), self.rank, self.device, state)
        return state

    def fit(self, on_checkpoint: Callable[[dict], None], echo_steps: bool = False) -> dict:
        """Train from ``self.step`` to the end; call ``on_checkpoint(client_state)`` on every rank at each
        checkpoint step (and the last); ``echo_steps`` logs each step here (no driver follows the metrics).
        Return the final client state."""
        cfg = self.cfg
        if self.rank == 0:
            self.log = MetricsLog(self.config.metrics_path, self.config.tensorboard_dir, self.step, echo_steps)
        rows_of = StepRows(self.plan, self.store.lengths, self.config.seed, self.pack_length)
        self._tokens_since, self._t_last, self._paused = 0, time.time(), 0.0
        self.engine.train()
        while self.step < self.total_steps:
            epoch, rows_of_step = self.plan.epoch_of(self.step), rows_of(self.step)
            loss_sum, normaliser = self.train_step(rows_of_step)
            self.step += 1
            self.consumed += sum(len(r) for r in rows_of_step)
            if self.step % cfg.log_every_steps == 0 or self.step == self.total_steps:
                self._log_step(epoch, loss_sum, normaliser)
            every = cfg.checkpoint_every_steps
            if self.step == self.total_steps or (every and self.step % every == 0):
                saving_from = time.time()
                on_checkpoint(self.client_state())
                self._paused += time.time() - saving_from  # a save is not training: keep it out of tokens/s
        if self.log is not None:
            self.log.close()
        return self.client_state()

    def train_step(self, rows_of_step: list[list[int]]):
        """Run one optimizer step over this rank's micro-batches; return (global summed loss, normaliser)."""
        import torch  # heavy: loaded on training ranks only
        import torch.distributed as dist  # heavy: loaded when used

        cfg, engine = self.cfg, self.engine
        accum, mode = cfg.gradient_accumulation_steps, cfg.loss_normalization
        normaliser = global_normaliser(rows_of_step, self.store, mode)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        for m in range(accum):
            micro_rows = micro_batch_rows(rows_of_step, self.rank, self.world, cfg.micro_batch_size, m)
            batch = collate_rows(micro_rows, self.store, self.config.pad_token_id, multiple=cfg.pad_to_multiple_of)
            part = micro_batch_loss(engine, batch, mode, self.device, self.loss_path, multiple=cfg.pad_to_multiple_of)
            # DeepSpeed divides by accumulation steps and averages over ranks: undo both, so the
            # gradient is that of (sum over the global batch) / normaliser.
            engine.backward(part * (self.world * accum / normaliser))
            engine.step()
            loss_sum += part.detach().double()
            self._tokens_since += sum(int(self.store.lengths[r].sum()) for r in micro_rows)  # no padding
        dist.all_reduce(loss_sum)  # every rank, every step: the logged loss is the global one
        return loss_sum, normaliser

    def _log_step(self, epoch: int, loss_sum, normaliser: float) -> None:
        import torch  # heavy: loaded on training ranks only
        import torch.distributed as dist  # heavy: loaded when used

        tokens = torch.tensor([self._tokens_since], dtype=torch.float64, device=self.device)
        dist.all_reduce(tokens)
        elapsed = max(time.time() - self._t_last - self._paused, 1e-9)
        if self.log is not None:
            norm = self.engine.get_global_grad_norm()
            row = {"step": self.step, "epoch": epoch, "loss": float(loss_sum) / normaliser,
                   "lr": self.engine.get_lr()[0], "grad_norm": float(norm) if norm is not None else float("nan"),
                   "tokens_per_s": float(tokens) / elapsed, "loss_normaliser": normaliser,
                   "consumed_rows": self.step * self.rows_per_step, "consumed_examples": self.consumed}
            if self.device.type == "cuda":  # the allocator's own counter: no device sync
                row["peak_memory_gib"] = torch.cuda.max_memory_allocated(self.device) / 2**30
            self.log.write(row, self.total_steps)
        self._tokens_since, self._t_last, self._paused = 0, time.time(), 0.0

    def cleanup(self) -> None:
        """Free the engine (a process may build several, e.g. the GPU check)."""
        import torch  # heavy: loaded on training ranks only

        self.engine = None
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
