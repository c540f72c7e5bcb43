"""bench/gpu_check.sh: the real loop under torchrun, killed and resumed, exported (--tiny on CPU; full on GPUs)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


def _run(tmp_path, *args):
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), *args, "--out", str(tmp_path),
                           "--work", str(tmp_path / "work")], cwd=REPO, env=env, capture_output=True, text=True)


def test_gpu_check_tiny_runs_on_cpu(tmp_path):
    done = _run(tmp_path, "--tiny")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    result = json.loads((tmp_path / "gpu_check_tiny.json").read_text())
    stage = result["stages"]["zero2"]
    assert result["ok"] and all(stage["checks"].values()) and len(stage["checks"]) == 7
    assert stage["max_abs_diff_resumed_vs_plain"] <= 1e-5 and stage["tokens_per_s"] > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_check_on_gpus(tmp_path):
    done = _run(tmp_path)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert set(result["stages"]) == {"zero1", "zero2", "zero3"} and result["ok"]
