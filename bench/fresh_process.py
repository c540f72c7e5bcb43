"""Run a benchmark's own script again in a fresh process (a measurement the parent's kernels, caches and peaks
must not touch) and read what it prints last."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_fresh(script: str | Path, *args: str, env: dict | None = None, timeout: float = 1800) -> str:
    """Run ``python SCRIPT ARGS`` with the repository on PYTHONPATH (and ``env`` on top of this environment);
    return the last line it printed. RuntimeError with its stderr's tail when it fails."""
    full_env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", **(env or {})}
    done = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, env=full_env,
                          timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{Path(script).name} {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done.stdout.strip().splitlines()[-1]
