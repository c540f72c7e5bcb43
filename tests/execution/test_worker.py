"""What the engine actor's attempt records say when an attempt does not end by committing: an error in the
actor is ``failed`` (not an engine death, so isolation does not count it), a cancelled task ``cancelled``,
and attempts left running by an earlier process of the same actor (Ray restarted it after a SIGKILL, an
out-of-memory kill or a lost node: no death hook ran) ``died`` when the actor starts again. A record left
``running`` would count as a death, point speculation at a chunk nobody runs, and mislead fault drills."""

from __future__ import annotations

import asyncio
import os

import pandas as pd
import pytest

from upft_ray.config import EngineConfig
from upft_ray.execution import worker as worker_module
from upft_ray.execution.isolation import NO_REASON, died
from upft_ray.execution.job import ChunkJob
from upft_ray.execution.worker import ChunkWorker
from upft_ray.io.chunk_store import ChunkStore, unit_key


class FailingEngine:
    """Raises ``error`` on every batch; ``hang`` instead waits until cancelled."""

    error: BaseException | None = ValueError("the stage's own bug")
    hang = False

    def __init__(self, model: str, engine, seed: int):
        pass

    async def __call__(self, batch: dict) -> dict:
        if self.hang:
            await asyncio.sleep(3600)
        raise self.error


def _worker(tmp_path, monkeypatch, **engine) -> ChunkWorker:
    monkeypatch.setattr(worker_module, "engine_class", lambda config: type("E", (FailingEngine,), engine))
    job = ChunkJob(out_dir=str(tmp_path), chunks={0: (None, 2)}, read=lambda spec, ctx: None,
                   finish=lambda rows, ctx: (None, [], {}))
    ChunkStore(tmp_path).prepare()
    return ChunkWorker(job, "model", EngineConfig(), seed=0)


def _rows() -> pd.DataFrame:
    return pd.DataFrame({"record": [0, 1], "reject_reason": ["", ""], "messages": ["[]", "[]"], "chunk": [0, 0]})


def test_an_error_in_the_actor_ends_the_attempt_as_failed_not_died(tmp_path, monkeypatch):
    worker = _worker(tmp_path, monkeypatch)
    with pytest.raises(ValueError, match="own bug"):
        asyncio.run(worker(_rows()))
    [record] = worker.store.attempts(unit_key(0))
    assert record["status"] == "failed" and "ValueError: the stage's own bug" in record["why"]
    assert not died([record]) and worker.store.fault_counts()["failed"] == 1 and not worker.running


def test_a_cancelled_task_ends_its_attempt_as_cancelled(tmp_path, monkeypatch):
    worker = _worker(tmp_path, monkeypatch, hang=True)

    async def cancel_soon():
        task = asyncio.ensure_future(worker(_rows()))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_soon())
    [record] = worker.store.attempts(unit_key(0))
    assert record["status"] == "cancelled" and not died([record])


def test_a_restarted_actor_records_its_earlier_process_attempts_as_died(tmp_path, monkeypatch):
    store = ChunkStore(tmp_path)
    store.prepare()
    me = f"pid-{os.getpid()}"  # the actor id outside Ray
    orphan = store.start_attempt(unit_key(0), "normal", "node-a", me)
    store.end_attempt({**orphan, "pid": orphan["pid"] + 1}, "running")  # an earlier process of this actor
    mine = store.start_attempt(unit_key(1), "normal", "node-a", me)  # this process's own: left alone
    other = store.start_attempt(unit_key(2), "normal", "node-b", "another-actor")  # maybe alive: left alone
    _worker(tmp_path, monkeypatch)
    by_key = {r["key"]: r for r in store.all_attempts()}
    assert by_key[unit_key(0)]["status"] == "died" and by_key[unit_key(0)]["why"] == NO_REASON
    assert by_key[unit_key(1)] == mine and by_key[unit_key(2)] == other
    assert store.fault_counts()["died"] == 3  # the orphan, plus two still running (counted as died at the end)
