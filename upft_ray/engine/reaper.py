"""A sidecar that ends an engine actor's processes once the actor is gone, however it went.

An engine actor's vLLM core (and its workers) are child processes holding the model and KV cache. When the
actor dies, Ray kills its process group, which holds them, but only while the node's raylet lives: ``ray stop
--force`` SIGKILLs the raylet with its workers, and the cores are left orphaned, holding memory the next run
needs. The actor starts this watcher in a session of its own (out of reach of a kill of the actor's group)
before it builds its engine; the watcher notes the actor's descendants while it lives and, once it is gone,
SIGKILLs those still running (the same process: pid and start time), and removes the socket directories of
actors that are gone (``RPC_PREFIX``). An actor that ends normally has stopped its engine and removed its
directory first; the watcher then finds nothing left and exits.

    python -m upft_ray.engine.reaper ACTOR_PID
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil

from upft_ray.runtime.scratch import remove_orphaned_scratch

RPC_PREFIX = "upft-vllm-"  # an engine actor's directory of vLLM socket files (``engine_env``)


def start_reaper() -> subprocess.Popen:
    """Start the watcher of this process's descendants, in a session of its own; return its handle."""
    return subprocess.Popen([sys.executable, "-m", "upft_ray.engine.reaper", str(os.getpid())],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, close_fds=True)


def watch(actor_pid: int, poll_s: float = 0.5) -> int:
    """Note ``actor_pid``'s descendants started after this watcher (the engine's; not processes the actor had
    before, such as a local Ray a driver started) every ``poll_s`` while it runs; once it is gone (or a zombie),
    SIGKILL those noted that still run and remove the socket directories of actors that are gone; return how many
    processes were killed."""
    me = psutil.Process()
    noted: dict[int, float] = {}
    try:
        actor = psutil.Process(actor_pid)
        while actor.is_running() and actor.status() != psutil.STATUS_ZOMBIE:
            noted = {p.pid: p.create_time() for p in actor.children(recursive=True)
                     if p.pid != me.pid and p.create_time() >= me.create_time()}
            time.sleep(poll_s)
    except psutil.Error:
        pass  # the actor went between two looks
    killed = 0
    for pid, started in noted.items():
        try:
            process = psutil.Process(pid)
            if process.create_time() == started:
                process.kill()
                killed += 1
        except psutil.Error:
            continue  # already gone
    remove_orphaned_scratch(RPC_PREFIX)
    return killed


if __name__ == "__main__":
    watch(int(sys.argv[1]))
