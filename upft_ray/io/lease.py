"""One attempt at a time per run directory: a heartbeated lease with fencing epochs.

A RayJob that is retried (``backoffLimit``) can start a new attempt while the old one's pods still
write to the same shared run directory. Each attempt therefore claims ``RUN/.lease/``:

- A claim is the file ``RUN/.lease/epoch-NNNNNNNN.json`` (``upft_ray.io.claims``), created with
  ``O_EXCL``; the holder is the highest epoch. Claiming epoch N+1 is the compare-and-swap: of two
  attempts racing to take over epoch N, the file system lets exactly one create N+1; the other
  re-reads, finds a live holder and refuses.
- The holder heartbeats by touching its own claim file (mtime) from a thread; transient file system
  errors are logged and retried, never fatal. A claim whose mtime is older than its timeout (its
  holder died, or was partitioned away) is taken over; a released claim (mtime 0) at once, and so is
  the claim of a holder that ran on this host and whose process is gone.
- A new attempt that finds a live claim waits up to ``UPFT_LEASE_WAIT_S`` (default 0) for it to go
  stale, then raises :class:`LeaseHeld` naming the holder (the CLI prints it on one line and exits 2).
  A RayJob retry sets the wait above the timeout, so it outlasts the attempt it replaces.
- Taking over fences the old attempt (``upft_ray.io.fencing``): its staging directory is moved away
  and every later commit or delete of it fails.
- Failing to take the lease at all (a file system error) raises :class:`LeaseError`: a stage never
  runs unleased.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import socket
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from upft_ray.io.claims import LEASE_DIR, HolderState, claim_path, current_epoch, lease_timeout_s, read_holder
from upft_ray.io.fencing import ENV, fence_older_staging, held, staging_path

log = logging.getLogger("upft.lease")


class LeaseHeld(RuntimeError):
    """Another attempt holds a live lease on the run directory."""


class LeaseError(RuntimeError):
    """The lease could not be taken (the run directory's file system refused); the stage does not run."""


def lease_wait_s() -> float:
    """Return how long a new attempt waits for a live holder to go stale (``UPFT_LEASE_WAIT_S``, default 0)."""
    return float(os.environ.get("UPFT_LEASE_WAIT_S", "0"))


@dataclass
class Lease:
    """A held lease: the run directory, our epoch and claim file, and the heartbeat thread."""
    run_dir: Path
    epoch: int
    path: Path
    holder: str
    heartbeat_s: float
    timeout_s: float
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def still_ours(self) -> bool:
        """Return True while no later epoch has claimed the run directory."""
        return current_epoch(self.path.parent) == self.epoch

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                if not self.still_ours():
                    log.error("%s: taken over by epoch %d; this attempt (epoch %d) is fenced and its commits will "
                              "fail", self.run_dir, current_epoch(self.path.parent), self.epoch)
                    return
                os.utime(self.path)
            except OSError as err:  # shared storage hiccup: the next beat retries; commits check the age
                log.warning("%s: lease heartbeat failed (%s); retrying", self.run_dir, err)

    def start(self) -> None:
        """Start heartbeating from a daemon thread."""
        self._thread = threading.Thread(target=self._beat, name="upft-lease-heartbeat", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Stop heartbeating, remove our staging directory and mark the claim released (mtime 0), if it is
        still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            if self.still_ours():
                shutil.rmtree(staging_path(self.run_dir, self.epoch), ignore_errors=True)
                os.utime(self.path, (0, 0))
        except OSError as err:  # not released: the next attempt waits for the timeout instead
            log.warning("%s: could not release the lease (%s)", self.run_dir, err)


def _claim(lease_dir: Path, epoch: int, holder: str, timeout_s: float) -> bool:
    """Create and write the claim of ``epoch``; return False when another attempt created it first."""
    path = claim_path(lease_dir, epoch)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        json.dump({"holder": holder, "host": socket.gethostname(), "pid": os.getpid(), "epoch": epoch,
                   "acquired": time.time(), "timeout_s": timeout_s, "argv": sys.argv}, fh)
        fh.flush()
        os.fsync(fh.fileno())
    dir_fd = os.open(lease_dir, os.O_RDONLY)  # the claim's name is durable too
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return True


def _wait_for_stale(lease_dir: Path, run_dir: Path, wait_s: float) -> HolderState | None:
    """Return the holder state once it is not live, waiting up to ``wait_s``; raises LeaseHeld past that."""
    deadline = time.time() + wait_s
    while True:
        state = read_holder(lease_dir)
        if state is None or not state.live():
            return state
        if time.time() >= deadline:
            raise LeaseHeld(f"{run_dir} is in use by another attempt: {state.describe()}; wait for it or stop it "
                            f"(a holder silent for longer than its timeout is taken over)")
        time.sleep(min(1.0, max(0.05, deadline - time.time())))


def acquire(run_dir: Path, timeout_s: float | None = None, wait_s: float | None = None) -> Lease:
    """Claim ``run_dir`` for this attempt, fence older attempts and start heartbeating; return the lease.

    Raises :class:`LeaseHeld` when another attempt holds a live claim (including one that won a race to
    take over the same stale claim) after ``wait_s``; :class:`LeaseError` when the claim cannot be written."""
    timeout_s = lease_timeout_s() if timeout_s is None else timeout_s
    wait_s = lease_wait_s() if wait_s is None else wait_s
    run_dir = Path(run_dir)
    lease_dir = run_dir / LEASE_DIR
    holder = f"{socket.gethostname()}:{os.getpid()}:{int(time.time())}:{secrets.token_hex(4)}"
    try:
        lease_dir.mkdir(parents=True, exist_ok=True)
        while True:
            state = _wait_for_stale(lease_dir, run_dir, wait_s)
            epoch = (state.epoch if state else 0) + 1
            if _claim(lease_dir, epoch, holder, timeout_s):
                break  # else another attempt claimed this epoch first: re-read (it is live, so we refuse)
        fence_older_staging(run_dir, epoch)
    except OSError as err:
        raise LeaseError(f"cannot take the lease on {run_dir} ({lease_dir}): {err}; the run does not start "
                         "unleased") from err
    if state is not None and not state.released:
        log.warning("%s: took over from %s; its later commits are fenced", run_dir, state.describe())
    for old in range(max(1, epoch - 20), epoch - 4):  # keep the last few claims for the record
        claim_path(lease_dir, old).unlink(missing_ok=True)
    lease = Lease(run_dir, epoch, claim_path(lease_dir, epoch), holder, min(5.0, timeout_s / 6), timeout_s)
    lease.start()
    return lease


@contextmanager
def run_lease(run_dir: Path):
    """Hold the lease on ``run_dir`` for the block (re-entrant inside an already leased directory); the
    epoch is exported in ``UPFT_RUN_LEASE`` for the Ray workers started inside. Yields the Lease (None when
    re-entered). Raises :class:`LeaseHeld` or :class:`LeaseError`."""
    run_dir = Path(os.path.abspath(run_dir))
    outer = held()
    if outer is not None and outer.get("pid") == os.getpid() and run_dir.is_relative_to(outer["run_dir"]):
        yield None
        return
    lease = acquire(run_dir)
    previous = os.environ.get(ENV)
    os.environ[ENV] = json.dumps({"run_dir": str(run_dir), "epoch": lease.epoch, "pid": os.getpid(),
                                  "timeout_s": lease.timeout_s})
    try:
        yield lease
    finally:
        lease.release()
        if previous is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = previous
