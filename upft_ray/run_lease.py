"""One attempt at a time per run directory: a heartbeated lease with fencing epochs.

A RayJob that is retried (``backoffLimit``) can start a new attempt while the old one's pods still
write to the same shared run directory. Each attempt therefore claims ``RUN/.lease/``:

- A claim is the file ``RUN/.lease/epoch-NNNNNNNN.json`` (holder host, pid, start time, a random
  token), created with ``O_EXCL``; the holder is the highest epoch. Claiming epoch N+1 is the
  compare-and-swap: of two attempts racing to take over epoch N, the file system lets exactly one
  create N+1; the other re-reads, finds a live holder and refuses.
- The holder heartbeats by touching its own claim file (mtime) every few seconds from a thread,
  so no two writers ever rewrite one file. A claim whose mtime is older than its ``timeout_s`` (its
  holder died, or was partitioned away) is taken over; a released claim (mtime 0) at once, and so is
  the claim of a holder that ran on this host and whose process is gone.
- A new attempt that finds a live claim raises :class:`LeaseHeld` (the CLI prints it on one line and
  exits 2), naming the holder and the age of its heartbeat.
- Fencing: the holder's epoch travels to its Ray workers in ``UPFT_RUN_LEASE``; every commit under
  the run directory (:mod:`upft_ray.durable`: shard summaries, manifests, checkpoint markers,
  exports) checks that no higher epoch exists just before its rename, and raises :class:`Fenced`
  otherwise. The check and the rename are two steps, so a fenced writer that stalls exactly between
  them can still land one file; the takeover timeout (60 s by default) makes that window matter
  only for a writer frozen for longer than the timeout in that instant.

Timeout: ``UPFT_LEASE_TIMEOUT_S`` (default 60 s); the heartbeat runs every timeout/6 s (at most 5 s).
Clocks: ages are this host's clock minus the file's mtime, so hosts sharing a run directory need
clocks within a few seconds of each other (NTP) - far less than the timeout.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import secrets
import socket
import sys
import threading
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ENV = "UPFT_RUN_LEASE"
LEASE_DIR = ".lease"
CLAIM = re.compile(r"^epoch-(\d{8})\.json$")


class LeaseHeld(RuntimeError):
    """Another attempt holds a live lease on the run directory."""


class Fenced(RuntimeError):
    """This attempt's lease was taken over: its commits must not land."""


def lease_timeout_s() -> float:
    """Return the takeover timeout in seconds (``UPFT_LEASE_TIMEOUT_S``, default 60)."""
    return float(os.environ.get("UPFT_LEASE_TIMEOUT_S", "60"))


def claim_path(lease_dir: Path, epoch: int) -> Path:
    """Return the claim file of ``epoch``."""
    return lease_dir / f"epoch-{epoch:08d}.json"


def current_epoch(lease_dir: Path) -> int:
    """Return the highest claimed epoch in ``lease_dir`` (0 when none)."""
    try:
        names = os.listdir(lease_dir)
    except FileNotFoundError:
        return 0
    return max((int(m.group(1)) for m in map(CLAIM.match, names) if m), default=0)


@dataclass
class HolderState:
    """What a claim file says about its holder, and how old its heartbeat is."""
    epoch: int
    info: dict
    age_s: float
    released: bool

    def live(self) -> bool:
        """True while the holder heartbeats within its timeout and is not known to be dead."""
        if self.released or self.age_s > float(self.info.get("timeout_s", lease_timeout_s())):
            return False
        return not self.dead_here()

    def dead_here(self) -> bool:
        """True when the holder ran on this host and its process is gone (a retry on the same machine need not
        wait out the timeout). A reused PID only makes us wait for the timeout, never take over early."""
        if self.info.get("host") != socket.gethostname() or not self.info.get("pid"):
            return False
        try:
            os.kill(int(self.info["pid"]), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def describe(self) -> str:
        state = "released" if self.released else f"heartbeat {self.age_s:.1f} s ago"
        state += ", process gone" if not self.released and self.dead_here() else ""
        return (f"holder {self.info.get('holder', '?')} (epoch {self.epoch}, {state}, "
                f"timeout {float(self.info.get('timeout_s', lease_timeout_s())):.0f} s)")


def read_holder(lease_dir: Path) -> HolderState | None:
    """Return the current holder's state, or None when the directory was never leased."""
    epoch = current_epoch(lease_dir)
    if epoch == 0:
        return None
    path = claim_path(lease_dir, epoch)
    try:
        mtime = path.stat().st_mtime
        info = json.loads(path.read_text() or "{}")
    except (FileNotFoundError, json.JSONDecodeError):
        # Created but not yet written (the O_EXCL create and the write are two steps): a fresh claim.
        mtime, info = time.time(), {}
    return HolderState(epoch, info, max(0.0, time.time() - mtime), mtime == 0)


@dataclass
class Lease:
    """A held lease: the run directory, our epoch and claim file, and the heartbeat thread."""
    run_dir: Path
    epoch: int
    path: Path
    holder: str
    heartbeat_s: float
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def still_ours(self) -> bool:
        return current_epoch(self.path.parent) == self.epoch

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            if not self.still_ours():
                print(f"[lease] {self.run_dir}: taken over by epoch {current_epoch(self.path.parent)}; "
                      f"this attempt (epoch {self.epoch}) is fenced and its commits will fail", file=sys.stderr,
                      flush=True)
                return
            try:
                os.utime(self.path)
            except OSError as err:  # shared storage hiccup: the next beat retries
                print(f"[lease] heartbeat failed: {err}", file=sys.stderr, flush=True)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._beat, name="upft-lease-heartbeat", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Stop heartbeating and mark the claim released (mtime 0), if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.still_ours():
            os.utime(self.path, (0, 0))


def acquire(run_dir: Path, timeout_s: float | None = None) -> Lease:
    """Claim ``run_dir`` for this attempt and start heartbeating; return the lease.

    Raises :class:`LeaseHeld` when another attempt holds a live claim (including one that won a
    race to take over the same stale claim)."""
    timeout_s = lease_timeout_s() if timeout_s is None else timeout_s
    lease_dir = Path(run_dir) / LEASE_DIR
    lease_dir.mkdir(parents=True, exist_ok=True)
    holder = f"{socket.gethostname()}:{os.getpid()}:{int(time.time())}:{secrets.token_hex(4)}"
    while True:
        state = read_holder(lease_dir)
        if state is not None and state.live():
            raise LeaseHeld(f"{run_dir} is in use by another attempt: {state.describe()}; wait for it or stop it "
                            f"(a holder silent for longer than its timeout is taken over)")
        epoch = (state.epoch if state else 0) + 1
        path = claim_path(lease_dir, epoch)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            continue  # another attempt claimed this epoch first: re-read (it is live, so we refuse)
        with os.fdopen(fd, "w") as fh:
            json.dump({"holder": holder, "host": socket.gethostname(), "pid": os.getpid(), "epoch": epoch,
                       "acquired": time.time(), "timeout_s": timeout_s, "argv": sys.argv}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        dir_fd = os.open(lease_dir, os.O_RDONLY)  # the claim's name is durable too (durable.py imports us)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        if state is not None and not state.released:
            print(f"[lease] {run_dir}: took over from {state.describe()}; its later commits are fenced",
                  file=sys.stderr, flush=True)
        for old in range(max(1, epoch - 20), epoch - 4):  # keep the last few claims for the record
            claim_path(lease_dir, old).unlink(missing_ok=True)
        lease = Lease(Path(run_dir), epoch, path, holder, heartbeat_s=min(5.0, timeout_s / 6))
        lease.start()
        return lease


def _held() -> dict | None:
    raw = os.environ.get(ENV)
    return json.loads(raw) if raw else None


def check_fence(path: Path) -> None:
    """Raise :class:`Fenced` when ``path`` lies in the run directory this process's attempt leased and a
    later attempt has claimed it since. Does nothing outside a leased run (tests, library use)."""
    held = _held()
    if held is None:
        return
    run_dir = Path(held["run_dir"])
    if not Path(os.path.abspath(path)).is_relative_to(run_dir):
        return
    now = current_epoch(run_dir / LEASE_DIR)
    if now != held["epoch"]:
        raise Fenced(f"not committing {path}: the lease on {run_dir} moved from epoch {held['epoch']} (this "
                     f"attempt) to {now}; another attempt owns this run directory now")


@contextmanager
def run_lease(run_dir: Path):
    """Hold the lease on ``run_dir`` for the block (re-entrant inside an already leased directory); the
    epoch is exported in ``UPFT_RUN_LEASE`` for the Ray workers started inside. Raises :class:`LeaseHeld`."""
    run_dir = Path(os.path.abspath(run_dir))
    held = _held()
    if held is not None and held.get("pid") == os.getpid() and run_dir.is_relative_to(held["run_dir"]):
        yield
        return
    lease = acquire(run_dir)
    previous = os.environ.get(ENV)
    os.environ[ENV] = json.dumps({"run_dir": str(run_dir), "epoch": lease.epoch, "pid": os.getpid()})
    try:
        yield lease
    finally:
        lease.release()
        if previous is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = previous


def leased(fn):
    """Decorate a stage entry point ``fn(cfg, ...)``: run it holding the lease on ``cfg.run_path``.

    A run_dir that cannot be written is left to the stage's own checks (they report it with every other
    problem, exit 2); a start that fails before any work leaves no run directory made just for its lease."""
    @functools.wraps(fn)
    def wrapper(cfg, *args, **kwargs):
        try:
            run_dir = cfg.run_path
            existed = run_dir.exists()
        except (OSError, ValueError, RuntimeError):  # not a usable path: the stage's checks say why (exit 2)
            return fn(cfg, *args, **kwargs)
        try:
            with ExitStack() as stack:
                try:
                    stack.enter_context(run_lease(run_dir))
                except OSError:  # nothing can be written there: the stage's checks say why (exit 2)
                    pass
                return fn(cfg, *args, **kwargs)
        except BaseException:
            if not existed:
                _remove_if_only_the_lease(run_dir)
            raise
    return wrapper


def _remove_if_only_the_lease(run_dir: Path) -> None:
    """Remove a run directory that holds nothing but a released lease (a start that failed its checks)."""
    try:
        if [p.name for p in run_dir.iterdir()] == [LEASE_DIR]:
            shutil.rmtree(run_dir)
    except OSError:
        pass  # best effort: another attempt may be using it now
