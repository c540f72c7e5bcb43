"""The engine actor of a chunked stage: runs each chunk it is given as units, commits them exactly once.

One ``ChunkWorker`` per engine replica (a Ray Data actor). For each chunk it is handed it asks
``isolation.plan_units`` what to run (the whole chunk, or ranges of it when the chunk keeps killing
engines), records an attempt per unit, generates, lets the stage's ``finish`` turn the rows into the
unit's output, and commits it (first commit wins). While a unit generates it watches for another
attempt committing the same unit (a speculative duplicate won) and then cancels its own requests.
A spare item (``speculation``) re-runs a straggling chunk of another engine. When the engine dies or
hangs, the death hook records every running attempt as died, with why, before the process exits; a
process killed outright (SIGKILL, the out-of-memory killer, a lost node) cannot, so the same actor,
restarted by Ray, records its old process's running attempts as died when it starts. An attempt never
stays ``running`` once it ends: isolation counts those as engine deaths.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa

from upft_ray.config import EngineConfig
from upft_ray.engine.lifecycle import on_engine_death
from upft_ray.engine.pool import engine_class
from upft_ray.execution.isolation import NO_REASON, Unit, plan_units
from upft_ray.execution.job import ChunkJob
from upft_ray.execution.speculation import WAIT, pick_straggler
from upft_ray.io.chunk_store import ChunkStore
from upft_ray.io.schema import REJECTED_SCHEMA

COMMIT_POLL_S = 2.0  # how often a generating unit beats (its attempt file's time) and checks for a rival commit


class EngineShare:
    """Who uses the engine: any number of whole chunks at once, or one isolated range alone."""

    def __init__(self):
        self.users, self.alone = 0, False
        self.changed: asyncio.Condition | None = None  # made on the actor's event loop, at first use

    async def enter(self, alone: bool) -> None:
        self.changed = self.changed or asyncio.Condition()
        async with self.changed:
            await self.changed.wait_for(lambda: not self.alone and (not alone or self.users == 0))
            self.users += 1
            self.alone = alone

    async def leave(self) -> None:
        async with self.changed:
            self.users -= 1
            self.alone = False
            self.changed.notify_all()


class ChunkWorker:
    """Ray Data actor holding one engine (built once); runs, commits and speculates chunks of ``job``."""

    def __init__(self, job: ChunkJob, model_path: str, engine: EngineConfig, seed: int):
        started = time.time()
        self.engine = engine_class(engine)(model_path, engine, seed)
        self.engine_init_s = time.time() - started
        self.job, self.store = job, ChunkStore(Path(job.out_dir))
        self.node_id, self.actor = _where()
        self.store.end_orphaned_attempts(self.actor, os.getpid(), NO_REASON)
        self.running: dict[str, dict] = {}
        self.share = EngineShare()
        on_engine_death(self._record_deaths)

    def __del__(self):
        close = getattr(getattr(self, "engine", None), "close", None)
        if close is not None:  # Ray Data retires the actor: stop the engine cleanly, not by its finalizers
            close()

    async def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        if "spare" in batch.columns:
            return pd.DataFrame([await self._speculate() for _ in range(len(batch))])
        return pd.DataFrame([await self._run_chunk(int(c), part) for c, part in batch.groupby("chunk", sort=False)])

    async def _run_chunk(self, chunk: int, rows: pd.DataFrame) -> dict:
        records = self.job.chunks[chunk][1]
        if rows["record"].nunique() != records:
            raise RuntimeError(f"chunk {chunk} arrived split ({rows['record'].nunique()} of {records} records); "
                               "a unit must hold whole chunks")
        for unit in plan_units(self.store, chunk, records):
            await self._run_unit(unit, rows, "normal")
        return chunk_summary(self.store, chunk)

    async def _run_unit(self, unit: Unit, rows: pd.DataFrame, kind: str) -> None:
        rows = rows[(rows["record"] >= unit.lo) & (rows["record"] < unit.hi)].reset_index(drop=True)
        attempt = self.store.start_attempt(unit.key, kind, self.node_id, self.actor)
        self.running[attempt["id"]] = attempt
        try:
            generated = await self._generate(unit, rows, attempt)
            if generated is None:
                self.store.end_attempt(attempt, "cancelled", "another attempt committed the unit first")
                return
            table, rejected, counts = self.job.finish(generated, self.job.context)
            summary = {**self.job.extra, **counts, "chunk": unit.chunk, "lo": unit.lo, "hi": unit.hi,
                       "whole": unit.whole, "started": attempt["started"], "finished": time.time(),
                       "node_id": self.node_id, "engine_init_s": round(self.engine_init_s, 3),
                       "engine_dtype": getattr(self.engine, "dtype", None),
                       "max_progress_gap_s": round(getattr(getattr(self.engine, "clock", None), "max_gap_s", 0.0), 3)}
            won = self.store.commit(unit.key, summary, table, _rejected_table(rejected), attempt["id"])
            self.store.end_attempt(attempt, "committed" if won else "lost")
        except asyncio.CancelledError:
            self.store.end_attempt(attempt, "cancelled", "Ray cancelled the actor's task")
            raise
        except Exception as err:
            # an error in this actor, not the engine's death: the record says so, and isolation does not
            # count it against the chunk's death budget
            self.store.end_attempt(attempt, "failed", f"{type(err).__name__}: {err}"[:500])
            raise
        finally:
            self.running.pop(attempt["id"], None)

    async def _generate(self, unit: Unit, rows: pd.DataFrame, attempt: dict) -> pd.DataFrame | None:
        """Return ``rows`` with the engine's columns (quarantined or rejected records get empty ones), or None
        when another attempt committed the unit meanwhile."""
        if unit.quarantine:
            rows = rows.assign(reject_reason=rows["reject_reason"].where(rows["reject_reason"] != "", unit.quarantine))
        todo = rows[rows["reject_reason"] == ""]
        out: dict | None = {}
        if not todo.empty:
            await self.share.enter(alone=not unit.whole)
            try:
                out = await self._engine_unless_committed(attempt, todo)
            finally:
                await self.share.leave()
        if out is None:
            return None
        generated = pd.DataFrame({c: list(v) if getattr(v, "dtype", None) == object else v for c, v in out.items()})
        return pd.concat([generated, blank_generation(rows[rows["reject_reason"] != ""])], ignore_index=True)

    async def _engine_unless_committed(self, attempt: dict, todo: pd.DataFrame) -> dict | None:
        task = asyncio.ensure_future(self.engine({c: todo[c].to_numpy() for c in todo.columns}))
        while True:
            done, _ = await asyncio.wait({task}, timeout=COMMIT_POLL_S)
            if done:
                return task.result()
            with contextlib.suppress(OSError):  # a missed beat costs nothing; the driver allows minutes
                self.store.touch_attempt(attempt)
            if self.store.committed(attempt["key"]):
                task.cancel()  # aborts the unit's requests in the engine
                return None

    async def _speculate(self) -> dict:
        """Re-run a chunk that straggles on another engine (spare items come after every chunk); return its
        summary, or a marker when there is none to help with."""
        while True:
            chunk = pick_straggler(self.store, self.job.chunks, self.actor)
            if chunk is None:
                return {"spare": True}
            if chunk is not WAIT:
                break
            await asyncio.sleep(1.0)
        spec, records = self.job.chunks[chunk]
        rows = await asyncio.to_thread(self.job.read, spec, self.job.context)
        await self._run_unit(Unit(chunk, 0, records, True), rows, "speculative")
        return {**chunk_summary(self.store, chunk), "spare": True} if self.store.committed(f"{chunk:06d}") else \
            {"spare": True}

    def _record_deaths(self, why: str) -> None:
        for attempt in list(self.running.values()):
            self.store.end_attempt(attempt, "died", why)


def chunk_summary(store: ChunkStore, chunk: int) -> dict:
    """Return the summary of a finished chunk: its whole unit's, or its ranges' summed (counts added)."""
    parts = store.summaries(chunk)
    whole = parts.get(f"{chunk:06d}")
    if whole is not None:
        return whole
    out: dict = {"chunk": chunk, "whole": False, "units": len(parts)}
    for summary in parts.values():
        for name, value in summary.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and name not in ("chunk", "lo", "hi"):
                out[name] = out.get(name, 0) + value if name not in ("started", "finished") else value
    out["started"] = min((s["started"] for s in parts.values()), default=0.0)
    out["finished"] = max((s["finished"] for s in parts.values()), default=0.0)
    return out


def blank_generation(rows: pd.DataFrame) -> pd.DataFrame:
    """Return ``rows`` (records not sent to the engine) with empty engine columns."""
    return rows.assign(prompt="", prompt_token_ids=[[] for _ in range(len(rows))], num_prompt_tokens=0,
                       response_text="", response_token_ids=[[] for _ in range(len(rows))],
                       num_response_tokens=0, finish_reason="")


def _rejected_table(rejected: list[dict]) -> pa.Table | None:
    return pa.Table.from_pylist(rejected, schema=REJECTED_SCHEMA) if rejected else None


def _where() -> tuple[str, str]:
    """Return (Ray node id, actor id) of this process ("" and the pid outside Ray)."""
    import ray  # heavy: Ray is loaded in every actor anyway

    if not ray.is_initialized():
        return "", f"pid-{os.getpid()}"
    context = ray.get_runtime_context()
    return context.get_node_id(), context.get_actor_id() or f"pid-{os.getpid()}"
