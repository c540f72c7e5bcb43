"""The exit path of an engine actor: its engine processes are killed and gone before it exits, stopped
(hung) ones included, so no engine core outlives its actor."""

import subprocess
import sys

from conftest import REPO

# Run in a child interpreter: kill_children kills every descendant of the calling process (pytest's own
# would go too).
SCRIPT = """
import os, signal, subprocess, sys
import psutil
from upft_ray.engine.lifecycle import kill_children
children = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"]) for _ in range(2)]
os.kill(children[0].pid, signal.SIGSTOP)  # a hung engine core: stopped, not dead
count = kill_children(wait_s=10)
print(count, not any(psutil.pid_exists(child.pid) for child in children))  # reaped: not even a zombie
"""


def test_kill_children_ends_running_and_stopped_children_before_returning():
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["2", "True"], done.stdout
