"""Stand-in engines for fault drills: plugged in as ``engine.backend: engines:NAME`` (README, "Engine
backends"), imported by the Ray workers from this directory (the test Ray puts it on their PYTHONPATH).

They make tokens up like the scale benchmark's stand-in (no model), and inject one fault each, decided
from the question text, so a drill is the same on every replica and every retry. A drill's settings
and logs live in ``$UPFT_DRILL_DIR`` (set for every test Ray worker; ``drill.json`` there):

- ``PoisonEngine``: the actor process dies (as a crashed engine core makes it) on any batch holding a
  question containing ``poison`` (default ``(#5)``); each death is a line of ``deaths.log``;
- ``SlowReplicaEngine``: the first replica to start (it claims ``slow.claim``) takes ``slow_s`` seconds
  per batch, the others ``fast_s``: a straggler;
- ``GradingFaultEngine``: answers ``BOOM-i`` to questions containing the i-th of ``boom`` (default ``["(#3)"]``)
  and makes the evaluation's grader raise on that answer, inside the actor (monkeypatched there), with a
  different exception class per marker;
- ``LostReplicaEngine``: the replica that first gets a batch holding ``lost`` (default ``(#3)``; it claims
  ``lost.claim``) dies, and Ray's restart of it never comes up (its constructor waits for ever, as a restart
  with no room left on the cluster does); every other replica, and any fresh one, runs;
- ``BoxedZeroEngine``: no fault, answers ``\\boxed{0}`` to every question (a known answer to grade and judge).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import numpy as np
from sampler_scale import StandInEngine

DRILL_ENV = "UPFT_DRILL_DIR"


def drill_dir() -> Path:
    return Path(os.environ.get(DRILL_ENV, "/nonexistent"))


def drill(key: str, default):
    """Return a setting of the current drill (``drill.json``), or ``default``."""
    path = drill_dir() / "drill.json"
    return json.loads(path.read_text()).get(key, default) if path.is_file() else default


def _questions(batch: dict) -> list[str]:
    return [str(m) for m in batch["messages"]]


class PoisonEngine(StandInEngine):
    """Dies on every batch that holds the poison question (the whole actor process, at once)."""

    async def __call__(self, batch: dict) -> dict:
        poison = drill("poison", "(#5)")
        if any(poison in q for q in _questions(batch)):
            with open(drill_dir() / "deaths.log", "a") as fh:
                fh.write(f"{os.getpid()} {len(batch['messages'])}\n")
            os._exit(1)
        return await super().__call__(batch)


class SlowReplicaEngine(StandInEngine):
    """One slow replica among fast ones: the first to start claims the slow role."""

    def __init__(self, model: str, engine, seed: int):
        super().__init__(model, engine, seed)
        try:
            os.close(os.open(drill_dir() / "slow.claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            self.delay = float(drill("slow_s", 4.0))
        except (FileExistsError, FileNotFoundError):
            self.delay = float(drill("fast_s", 0.05))

    async def __call__(self, batch: dict) -> dict:
        await asyncio.sleep(self.delay)  # cancellable: a duplicate that lost stops here
        return await super().__call__(batch)


class LostReplicaEngine(StandInEngine):
    """A replica lost for good: dies on its first batch holding the marker, and its restart never comes up."""

    def __init__(self, model: str, engine, seed: int):
        import ray

        if ray.get_runtime_context().was_current_actor_reconstructed and (drill_dir() / "lost.claim").exists():
            time.sleep(1e6)  # the restarted actor waits for room that never comes
        super().__init__(model, engine, seed)

    async def __call__(self, batch: dict) -> dict:
        if any(drill("lost", "(#3)") in q for q in _questions(batch)):
            try:
                os.close(os.open(drill_dir() / "lost.claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                os._exit(1)
            except FileExistsError:
                pass  # lost once already: any other engine runs it
        return await super().__call__(batch)


class GradingFaultEngine(StandInEngine):
    """Answers ``BOOM-i`` to the marked questions (``boom``: a list of markers) and makes grading raise on such
    an answer in this actor's process, a different exception class per marker; others answer ``\\boxed{0}``."""

    RAISES = (ZeroDivisionError, RecursionError, KeyError, UnicodeDecodeError)

    def __init__(self, model: str, engine, seed: int):
        super().__init__(model, engine, seed)
        from upft_ray.evaluation import finish
        from upft_ray.evaluation.benchmarks import GENERIC, Benchmark

        def grader(output: str, gold: str):
            if output.startswith("BOOM-"):
                kind = self.RAISES[int(output.removeprefix("BOOM-")) % len(self.RAISES)]
                raise kind("utf-8", b"\xff", 0, 1, "injected") if kind is UnicodeDecodeError else kind("injected")
            return GENERIC.grader(output, gold)

        finish.GENERIC = Benchmark("generic", grader=grader)

    async def __call__(self, batch: dict) -> dict:
        out = await super().__call__(batch)
        markers = drill("boom", ["(#3)"])
        out["response_text"] = np.array([next((f"BOOM-{i}" for i, m in enumerate(markers) if m in q), "\\boxed{0}")
                                         for q in _questions(batch)], dtype=object)
        return out


class BoxedZeroEngine(StandInEngine):
    """Answers ``\\boxed{0}`` to every question: right exactly where the gold answer is 0."""

    async def __call__(self, batch: dict) -> dict:
        out = await super().__call__(batch)
        out["response_text"] = np.array(["\\boxed{0}"] * len(out["response_text"]), dtype=object)
        return out
