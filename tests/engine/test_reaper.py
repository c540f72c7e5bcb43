"""The engine actor's watcher (upft_ray/engine/reaper.py): once the actor is SIGKILLed, what it started after the
watcher is SIGKILLed too (its engine and the engine's own children), and the watcher exits; what the actor
started before the watcher is left alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import psutil
from conftest import REPO
from drills import survivors

ACTOR = """
import subprocess, sys, time
before = subprocess.Popen(["sleep", "60"])
from upft_ray.engine.reaper import start_reaper
reaper = start_reaper()
time.sleep(0.2)  # a start time after the watcher's, at the clock's resolution
ENGINE = "import subprocess, time; subprocess.Popen(['sleep', '60']); time.sleep(60)"
engine = subprocess.Popen([sys.executable, "-c", ENGINE])
time.sleep(1.5)  # the watcher notes the engine and its child
print(before.pid, reaper.pid, engine.pid, flush=True)
time.sleep(60)
"""


def test_a_killed_actor_takes_the_processes_it_started_after_the_watcher_and_no_others():
    actor = subprocess.Popen([sys.executable, "-c", ACTOR], cwd=REPO, stdout=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:
        before, reaper, engine = map(int, actor.stdout.readline().split())
        engine_child = psutil.Process(engine).children()[0].pid
        os.kill(actor.pid, signal.SIGKILL)
        actor.wait(timeout=10)
        assert survivors([engine, engine_child, reaper], timeout_s=10) == set()
        assert psutil.Process(before).is_running()  # started before the watcher: not the engine's
    finally:
        os.killpg(actor.pid, signal.SIGKILL)
        actor.stdout.close()
