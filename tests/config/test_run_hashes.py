"""Run hashes stay where committed runs expect them (scripts/run_hashes.py --check against the hashes
recorded before the package re-layout): a change that moves one would refuse, or wrongly reuse, every
existing run directory."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO


def test_every_shipped_config_keeps_its_run_hashes():
    done = subprocess.run([sys.executable, "scripts/run_hashes.py", "--check"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "78 of 78 configs kept their run hashes" in done.stdout  # 64 + the 14 paper-row configs of 2026-12-06
