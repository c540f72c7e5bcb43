"""Rank 0's training log: a console line, ``metrics.jsonl``, ``events.jsonl`` and TensorBoard."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from upft_ray.run_lease import check_fence
from upft_ray.schema import finite_json


def say(message: str) -> None:
    """Print one line from a train worker exactly once (Ray Train's patched ``print`` would also send
    it through its logger, and the driver would show every line twice)."""
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def record_event(path: str, event: str, **fields) -> None:
    """Append one event (e.g. a resume) to the run's audit trail ``events.jsonl``; raises
    :class:`upft_ray.run_lease.Fenced` in an attempt whose run lease was taken over."""
    check_fence(Path(path))
    with open(path, "a") as fh:
        fh.write(json.dumps({"event": event, **fields, "time": time.time()}) + "\n")


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
        """Log one step's row (``step``, ``loss``, ``lr``, ``grad_norm``, ``tokens_per_s``, ...)."""
        per_step = (time.time() - self.started) / max(1, row["step"] - self.start_step)
        say(f"[train] step {row['step']}/{total_steps} loss {row['loss']:.4f} lr {row['lr']:.2e} "
            f"grad_norm {row['grad_norm']:.3f} tok/s {row['tokens_per_s']:.0f} "
            f"ETA {per_step * (total_steps - row['step']):.0f}s")
        check_fence(self.path)  # an attempt whose run lease was taken over stops here, not in another's log
        with self.path.open("a") as fh:
            fh.write(json.dumps(finite_json(row), allow_nan=False) + "\n")  # NaN (no grad norm) -> null
        if self.writer is not None:
            for key in ("loss", "lr", "grad_norm", "tokens_per_s"):
                self.writer.add_scalar(f"train/{key}", row[key], row["step"])
            self.writer.flush()

    def close(self) -> None:
        """Flush and close TensorBoard."""
        if self.writer is not None:
            self.writer.close()
