"""Rank 0's training log: ``metrics.jsonl``, ``events.jsonl``, TensorBoard and (without a driver) a log line per step.

Both files are read back on resume, so both are durable and fenced: ``metrics.jsonl`` is cut back to the
checkpoint resumed from by rewriting it through a temporary name (never in place), and every appended
line is fsynced. An attempt that lost its run lease stops here, not in another attempt's log.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from upft_ray.io.durable import append_line_durably, write_text_durably
from upft_ray.io.manifests import finite_json

log = logging.getLogger("upft.train")


def record_event(path: str, event: str, **fields) -> None:
    """Append one event (e.g. a resume) to the run's audit trail ``events.jsonl``; raises
    :class:`upft_ray.io.fencing.Fenced` in an attempt whose run lease was taken over."""
    append_line_durably(Path(path), json.dumps({"event": event, **fields, "time": time.time()}))


def read_events(path: Path, event: str) -> list[dict]:
    """Return the events named ``event`` in ``events.jsonl`` (none when the file is absent)."""
    if not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if r.get("event") == event]


class MetricsLog:
    """Rank 0's per-step metrics: log line, ``metrics.jsonl`` and TensorBoard when enabled."""

    def __init__(self, path: str, tensorboard_dir: str | None, resumed_step: int, echo: bool = False):
        self.path, self.echo = Path(path), echo
        self.start_step, self.started = resumed_step, time.time()
        if self.path.is_file():  # steps after the checkpoint we resume from are redone: drop their rows
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line)["step"] <= resumed_step]
            write_text_durably(self.path, "".join(line + "\n" for line in kept))
        self.writer = None
        if tensorboard_dir:
            from torch.utils.tensorboard import SummaryWriter  # heavy: only with train.tensorboard

            self.writer = SummaryWriter(tensorboard_dir)

    def write(self, row: dict, total_steps: int) -> None:
        """Record one step's row (``step``, ``loss``, ``lr``, ``grad_norm``, ``tokens_per_s``, ...); the driver
        logs it from the file (``upft_ray.training.progress``), a torchrun harness from here."""
        if self.echo:
            per_step = (time.time() - self.started) / max(1, row["step"] - self.start_step)
            log.info("step %d/%d loss %.4f lr %.2e grad_norm %.3f tok/s %.0f ETA %.0fs", row["step"], total_steps,
                     row["loss"], row["lr"], row["grad_norm"], row["tokens_per_s"],
                     per_step * (total_steps - row["step"]))
        append_line_durably(self.path, json.dumps(finite_json(row), allow_nan=False))  # NaN (no grad norm) -> null
        if self.writer is not None:
            for key in ("loss", "lr", "grad_norm", "tokens_per_s"):
                self.writer.add_scalar(f"train/{key}", row[key], row["step"])
            self.writer.flush()

    def close(self) -> None:
        """Flush and close TensorBoard."""
        if self.writer is not None:
            self.writer.close()
