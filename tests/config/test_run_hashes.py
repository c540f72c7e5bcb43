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
    # 64 + the 14 paper-row configs of 2026-12-06 + the 0.5B sweep's 13 (2026-12-07, when train_legacy was added)
    assert "91 of 91 configs kept their run hashes" in done.stdout
