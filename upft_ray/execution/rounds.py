"""Work an engine took with it: chunks held by an engine that is gone and not coming back.

Ray restarts a lost engine actor and retries the chunks it held on it, and spare items redo a lost
engine's chunks elsewhere (``speculation``). But a restarted actor needs room: with none left (the lost
node not replaced, its GPUs gone) Ray waits for ever, and so would the stage, since Ray Data ends only
once every task it handed out has returned. The attempt records are the truth, so the driver watches
them and ends a round of Ray Data early when

- every chunk is committed (by whichever attempt) and Ray Data has still not ended ``COMMITTED_GRACE_S``
  later: what it waits for is a retry of work already done;
- chunks are unfinished and no attempt anywhere has started, ended or beaten (a running attempt touches
  its file every ``worker.COMMIT_POLL_S``) for ``engine.lost_work_timeout_s``: nothing works on them.

A round ended early stops its engines (Ray Data's forced shutdown: actors killed, pending ones
dropped), records the attempts still marked running (died where Ray reports their node dead,
interrupted otherwise), and the driver runs the unfinished chunks again on a fresh engine pool, in at
most ``MAX_ROUNDS`` rounds in all.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from upft_ray.io.chunk_store import ChunkStore

COMMITTED_GRACE_S = 10.0  # a round's normal end follows its last commit within a second
MAX_ROUNDS = 3


def latest_activity(out_dir: Path) -> float:
    """Return the newest time an attempt of the stage started, ended or beat (its file's time; 0.0 if none)."""
    newest, root = 0.0, Path(out_dir) / "attempts"
    for unit in os.scandir(root) if root.is_dir() else ():
        if unit.is_dir():
            for entry in os.scandir(unit.path):
                newest = max(newest, entry.stat().st_mtime)
    return newest


class RoundWatch:
    """Tells when one round of a chunked stage should end early (the module's two rules)."""

    def __init__(self, store: ChunkStore, chunks: dict[int, int], timeout_s: float):
        self.store, self.chunks, self.timeout_s = store, chunks, timeout_s
        self.started, self.all_committed_at = time.time(), None

    def why_stop(self, now: float | None = None) -> str:
        """Return why the round should end now, or "" while it should go on."""
        now = time.time() if now is None else now
        left = self.store.unfinished(self.chunks)
        if not left:
            self.all_committed_at = self.all_committed_at or now
            if now - self.all_committed_at < COMMITTED_GRACE_S:
                return ""
            return ("every chunk is committed, but Ray Data still waits on engine tasks (retries of work done "
                    "elsewhere, held for an engine that has not come back)")
        last = latest_activity(self.store.out_dir)
        if last < self.started or now - last < self.timeout_s:  # nothing started yet this round, or alive
            return ""
        return (f"{len(left)} chunk(s) unfinished (first: {left[:5]}) and no engine has worked on any chunk for "
                f"{now - last:.0f}s (engine.lost_work_timeout_s: {self.timeout_s:g}): their engine was lost "
                "and has not come back")


def end_abandoned_attempts(store: ChunkStore) -> int:
    """Record the attempts a stopped round left marked running: died where Ray reports their node dead (lost
    with it), interrupted otherwise (the round's engines were stopped); return how many."""
    import ray  # heavy: Ray is up whenever a round ran

    dead = {node["NodeID"] for node in ray.nodes() if not node["Alive"]}
    running = [r for r in store.all_attempts() if r["status"] == "running"]
    for record in running:
        if record["node_id"] in dead:
            store.end_attempt(record, "died", "its node was lost (Ray reports it dead)")
        else:
            store.end_attempt(record, "interrupted", "the stage stopped its engines to run unfinished chunks again")
    return len(running)


def stop_execution(ds) -> None:
    """Stop ``ds``'s running Ray Data execution now (its actors killed, pending ones dropped); return nothing.

    Raises RuntimeError when this Ray Data keeps no executor on the dataset (it moved in a later version)."""
    executor = getattr(ds, "_current_executor", None)  # where Ray Data 2.x keeps it (for shutdown on GC)
    if executor is None:
        raise RuntimeError("cannot stop the stage's engine pool: this Ray Data version keeps no executor on the "
                           "dataset; rerun the same command to finish the unfinished chunks")
    executor.shutdown(force=True)
