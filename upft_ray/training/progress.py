"""Training progress, logged by the driver: rank 0 writes each step to ``RUN/train/metrics.jsonl`` (and each
resume to ``events.jsonl``); the driver follows those files while Ray Train runs and logs a line per step,
so a normal run's console holds the driver's lines only (``upft_ray.runtime.ray_session``)."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

log = logging.getLogger("upft.train")


class TrainProgress:
    """A context manager that logs, from the driver, every step and resume the training writes."""

    def __init__(self, metrics_path: Path, events_path: Path, total_steps: int, every_s: float = 1.0):
        self.metrics_path, self.events_path = Path(metrics_path), Path(events_path)
        self.total_steps, self.every_s = total_steps, every_s
        self.last_step, self.events_seen = 0, 0
        self.first: tuple[float, int] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="upft-train-progress", daemon=True)

    def __enter__(self) -> TrainProgress:
        # What an earlier attempt wrote was logged by that attempt.
        self.events_seen = len(_records(self.events_path))
        self.last_step = max((r.get("step", 0) for r in _records(self.metrics_path)), default=0)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.poll()

    def _follow(self) -> None:
        while not self._stop.wait(self.every_s):
            self.poll()

    def poll(self) -> None:
        """Log the steps and resumes written since the last poll (a file being written is read again later)."""
        for event in _records(self.events_path)[self.events_seen:]:
            self.events_seen += 1
            if event.get("event") == "resumed":
                log.info("resumed from checkpoint at step %d/%d", event["step"], self.total_steps)
                self.last_step = min(self.last_step, event["step"])
        for row in _records(self.metrics_path):
            if row.get("step", 0) > self.last_step:
                self.last_step = row["step"]
                self._log(row)

    def _log(self, row: dict) -> None:
        now = time.time()
        self.first = self.first or (now, row["step"] - 1)
        per_step = (now - self.first[0]) / max(1, row["step"] - self.first[1])
        log.info("step %d/%d loss %.4f lr %.2e grad_norm %s tok/s %.0f ETA %.0fs", row["step"], self.total_steps,
                 row["loss"], row["lr"], "-" if row.get("grad_norm") is None else f"{row['grad_norm']:.3f}",
                 row["tokens_per_s"], per_step * (self.total_steps - row["step"]))


def _records(path: Path) -> list[dict]:
    """Return the complete JSON lines of ``path`` (none when it is absent; a half-written last line is left)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return out
