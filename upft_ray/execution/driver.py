"""The driver of a chunked stage: stream the pending chunks through Ray Data into an engine pool.

Ray Data streams one item per pending chunk, then the spare items (one per engine slot, when there
are several engines and ``engine.speculative_tail`` is on): a CPU task runs the stage's ``read`` step
per chunk, the engine actors (``worker.ChunkWorker``) generate, finish and commit. The driver keeps
only the summaries, for progress. Actors restart without limit and their batches are retried without
limit: what ends a chunk that keeps killing engines is its own death budget (``isolation``). Ray Data
runs in a thread of the driver while the driver watches the attempt records: a round whose work waits
on an engine that is not coming back is stopped and its unfinished chunks run again (``rounds``).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from pathlib import Path

import pandas as pd

from upft_ray.config import EngineConfig
from upft_ray.engine.pool import engine_actor_options
from upft_ray.execution.job import ChunkJob
from upft_ray.execution.rounds import MAX_ROUNDS, RoundWatch, end_abandoned_attempts, stop_execution
from upft_ray.execution.speculation import hold_spare
from upft_ray.execution.worker import ChunkWorker, chunk_summary
from upft_ray.io.chunk_store import ChunkStore

WATCH_S = 5.0  # with no summary for this long, the driver asks the round's watch whether to end it
_END = object()


class Progress:
    """Logs a line per finished chunk (at most every ``every_s`` seconds): records/s, tokens/s, ETA.

    Rates are measured from the first finished chunk, so engine start-up does not distort them; until
    a second chunk finishes they are measured from the start (start-up included) rather than shown as 0."""

    def __init__(self, log: logging.Logger, total_chunks: int, total_records: int, done_chunks: int,
                 done_records: int, what: str = "questions", every_s: float = 5.0):
        self.log, self.what = log, what
        self.total_chunks, self.total_records = total_chunks, total_records
        self.chunks, self.records, self.tokens = done_chunks, done_records, 0
        self.every_s, self.last, self.first = every_s, 0.0, None
        self.start = (time.time(), done_records, 0)

    def update(self, summary: dict) -> None:
        """Count one finished chunk and log a progress line if it is time."""
        now = time.time()
        self.chunks += 1
        self.records += summary["records"]
        if self.first is None:
            self.first = (now, self.records, summary.get("generated_tokens", 0))
        self.tokens += summary.get("generated_tokens", 0)
        if now - self.last < self.every_s and self.chunks < self.total_chunks:
            return
        self.last = now
        t0, r0, k0 = self.first if self.records > self.first[1] else self.start
        elapsed = now - t0
        rate = (self.records - r0) / elapsed if elapsed > 0 else 0.0
        tok_rate = (self.tokens - k0) / elapsed if elapsed > 0 else 0.0
        eta = f"{(self.total_records - self.records) / rate:,.0f}s" if rate > 0 else "-"
        self.log.info("chunks %d/%d | %s %s/%s | %.1f/s | %s gen tok/s | ETA %s", self.chunks, self.total_chunks,
                      self.what, f"{self.records:,}", f"{self.total_records:,}", rate, f"{tok_rate:,.0f}", eta)


def read_step(batch: pd.DataFrame, job: ChunkJob) -> pd.DataFrame:
    """Ray Data UDF: the request rows of the chunk named in ``batch`` (one item), or the spare item as it is."""
    if "spare" in batch.columns:
        hold_spare(ChunkStore(Path(job.out_dir)), job.chunks)
        return batch
    rows = [job.read(job.chunks[int(c)][0], job.context).assign(chunk=int(c)) for c in batch["chunk"]]
    return pd.concat(rows, ignore_index=True)


def spare_count(engine: EngineConfig) -> int:
    """Return how many spare items follow the chunks: one per engine slot, none with a single engine."""
    if not engine.speculative_tail or engine.num_replicas == 1:
        return 0
    return engine.num_replicas * engine.max_batches_in_flight


def chunk_dataset(job: ChunkJob, todo: list[int], model_path: str, engine: EngineConfig, seed: int):
    """Return the lazy Ray Data pipeline that runs ``todo`` (then the spare items) through an engine pool."""
    import ray.data  # heavy: Ray loads only when a stage runs

    items = [{"chunk": c} for c in todo]
    spares = [{"spare": k} for k in range(spare_count(engine))]
    ds = ray.data.from_items(items + spares, override_num_blocks=len(items) + len(spares))
    # Reading a chunk takes milliseconds next to generating it: two readers per engine keep the engines
    # fed without a crowd of idle worker processes.
    readers = max(1, min(2 * engine.num_replicas, len(items) + len(spares)))
    ds = ds.map_batches(read_step, batch_size=1, batch_format="pandas", num_cpus=0.25,
                        compute=ray.data.TaskPoolStrategy(size=readers), fn_kwargs={"job": job})
    return ds.map_batches(ChunkWorker, batch_size=None, batch_format="pandas", **engine_actor_options(engine),
                          fn_constructor_kwargs={"job": job, "model_path": model_path, "engine": engine, "seed": seed})


def run_chunks(job: ChunkJob, todo: list[int], model_path: str, engine: EngineConfig, seed: int,
               progress: Progress) -> None:
    """Run and commit every chunk in ``todo`` (Ray must be up); return once each is committed.

    A round that leaves chunks to an engine that is not coming back is ended early and its unfinished
    chunks run again on a fresh pool (``rounds``). Raises RuntimeError naming them after ``MAX_ROUNDS``."""
    store, reported = ChunkStore(Path(job.out_dir)), set()
    for _ in range(MAX_ROUNDS):
        sizes = {c: job.chunks[c][1] for c in todo}
        why = _run_round(job, todo, model_path, engine, seed, progress, reported,
                         RoundWatch(store, sizes, engine.lost_work_timeout_s))
        if why:
            end_abandoned_attempts(store)
        todo = store.unfinished(sizes)
        for chunk in sorted(set(job.chunks) - set(todo) - reported):  # committed, its own task never came back
            progress.update(chunk_summary(store, chunk))
            reported.add(chunk)
        if not todo:
            return
        progress.log.warning("%s; running the %d unfinished chunk(s) again on a fresh engine pool",
                             why or "the engine pool ended with chunks unfinished", len(todo))
    raise RuntimeError(f"{len(todo)} chunk(s) still unfinished after {MAX_ROUNDS} rounds of engines (first: "
                       f"{todo[:5]}); rerun the same command to finish them")


def _run_round(job: ChunkJob, todo: list[int], model_path: str, engine: EngineConfig, seed: int,
               progress: Progress, reported: set[int], watch: RoundWatch) -> str:
    """Run ``todo`` through one Ray Data execution, reporting each chunk's summary; return "" once it ended by
    itself, or why ``watch`` ended it early (its engines are stopped then)."""
    ds = chunk_dataset(job, todo, model_path, engine, seed)
    results: queue.Queue = queue.Queue()
    thread = threading.Thread(target=_consume, args=(ds, results), name="upft-chunks", daemon=True)
    thread.start()
    why = ""
    try:
        while not why:
            try:
                item = results.get(timeout=WATCH_S)
            except queue.Empty:
                why = watch.why_stop()
                continue
            if item is _END:
                return ""
            if isinstance(item, BaseException):
                raise item
            if not item.get("spare") and item["chunk"] not in reported:
                progress.update(item)
                reported.add(item["chunk"])
        progress.log.warning("%s: stopping this round's engines", why)
        stop_execution(ds)
        return why
    finally:
        if thread.is_alive():  # an error or an interrupt here: do not leave engines running behind
            with contextlib.suppress(Exception):
                stop_execution(ds)
            thread.join(timeout=60)


def _consume(ds, results: queue.Queue) -> None:
    """Thread body: put every summary of ``ds`` on ``results``, then _END (or the error that ended it)."""
    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="pandas"):
            for summary in batch.to_dict("records"):
                results.put(summary)
        results.put(_END)
    except BaseException as err:  # handed to the driver's thread, which raises it
        results.put(err)
