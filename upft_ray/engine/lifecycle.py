"""How an engine actor ends when its engine is dead or hung: record why, kill its engine processes, exit.

Exiting the process (``os._exit``) is what makes Ray Data restart the actor and retry every batch it
held (``ray.actor.exit_actor()`` would be an intended exit, whose batches Ray does not retry). Before
that, the actor's death hooks run (the sampler records which chunk attempts died, and why: the poison
row isolation reads it) and every child process is SIGKILLed: a hung engine core may be stopped or
stuck in a kernel call, and must not outlive its actor holding memory or a GPU.
"""

from __future__ import annotations

import logging
import os
import signal
import weakref
from typing import Callable

import psutil

from upft_ray.runtime.scratch import remove_owned_scratch

log = logging.getLogger("upft.engine")

_death_hooks: list[weakref.WeakMethod] = []


def on_engine_death(hook: Callable[[str], None]) -> None:
    """Register the bound method ``hook(why)`` to run, best effort, before this process exits for a dead or
    hung engine. Held weakly: registering keeps no object alive (Ray Data retires an actor's engine by
    dropping it)."""
    _death_hooks.append(weakref.WeakMethod(hook))


def kill_children(wait_s: float = 5.0) -> int:
    """SIGKILL every descendant process of this one (SIGKILL also ends a stopped process) and wait up to
    ``wait_s`` for them to be gone (reaped, where they are our children), so that no engine core outlives
    the actor that held it; return how many there were."""
    try:
        children = psutil.Process().children(recursive=True)
    except psutil.Error:
        return 0
    for child in children:
        try:
            os.kill(child.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    psutil.wait_procs(children, timeout=wait_s)
    return len(children)


def exit_actor(why: str) -> None:
    """Record ``why``, kill the engine's processes, remove this process's scratch directories (its vLLM socket
    files: ``os._exit`` runs no ``atexit``) and exit this process at once (never returns)."""
    log.error("engine actor exits: %s; Ray Data restarts it and redoes the batches it held", why)
    for ref in list(_death_hooks):
        hook = ref()
        if hook is None:
            continue
        try:
            hook(why)
        except Exception as err:  # noqa: BLE001 -- the exit must happen whatever a hook does
            log.error("death hook failed: %s: %s", type(err).__name__, err)
    kill_children()
    remove_owned_scratch()
    os._exit(1)
