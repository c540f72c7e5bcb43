"""A per-answer deadline that holds on the main thread and off it.

On the main thread an interval timer raises :class:`GradingTimeout` (it re-fires every 0.2 s, so a
library that swallows one exception still stops). ``signal`` cannot reach other threads (Ray actors may
grade from threads), so there the work runs in a one-process helper pool whose process is killed past the
deadline: a stuck comparison costs its process, not the run."""

from __future__ import annotations

import atexit
import multiprocessing
import signal
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable


class GradingTimeout(BaseException):
    """The deadline passed (a BaseException so that libraries' ``except Exception`` do not swallow it)."""


@contextmanager
def alarm(seconds: float):
    """Raise GradingTimeout in the main thread once ``seconds`` pass inside the block."""
    state = {"active": True}

    def fire(signum, frame):
        if state["active"]:
            raise GradingTimeout(f"over {seconds} s")

    previous = signal.signal(signal.SIGALRM, fire)
    outer, _ = signal.setitimer(signal.ITIMER_REAL, max(seconds, 1e-3), 0.2)  # 0 would disarm it
    started = time.monotonic()
    try:
        yield
    finally:
        state["active"] = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer > 0:  # someone else's timer was running: give it back what is left of it
            signal.setitimer(signal.ITIMER_REAL, max(outer - (time.monotonic() - started), 0.001))


def call_with_alarm(fn: Callable, args: tuple, seconds: float) -> tuple[Any, bool]:
    """Return (fn(*args), False), or (None, True) when it ran past ``seconds`` (main thread only)."""
    try:
        with alarm(seconds):
            return fn(*args), False
    except GradingTimeout:
        return None, True


_pool = None
_pool_lock = threading.Lock()


def warm() -> None:
    """Import math-verify and sympy before any deadline is armed: an import cut short by the alarm
    would leave half-initialised modules behind for every later answer."""
    import math_verify  # noqa: F401  (heavy: imported here to be loaded before a deadline is armed)
    import sympy  # noqa: F401  (heavy: imported here to be loaded before a deadline is armed)


def call_with_deadline(fn: Callable, args: tuple, seconds: float) -> tuple[Any, bool]:
    """Return (fn(*args), timed out) with a deadline of ``seconds`` from any thread.

    ``fn`` must be a module-level function (off the main thread it is pickled to the helper process)."""
    if threading.current_thread() is threading.main_thread():
        warm()
        return call_with_alarm(fn, args, seconds)

    global _pool
    with _pool_lock:  # one comparison at a time, so queued ones do not eat each other's deadline
        fresh = _pool is None
        if fresh:
            _pool = multiprocessing.get_context("spawn").Pool(1, initializer=warm)
            atexit.register(_pool.terminate)
        pending = _pool.apply_async(call_with_alarm, (fn, args, seconds))
        try:  # the helper's own alarm fires first; the slack covers its start and a hang in C code
            return pending.get(seconds + (20 if fresh else 3))
        except multiprocessing.TimeoutError:
            _pool.terminate()
            _pool = None
            return None, True
