"""Helpers for tests of the training loop on a tiny random Qwen2 and synthetic UPFT-shaped examples.

Imported by the test modules (fixtures included); not a conftest.py, which would shadow tests/conftest.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from upft_ray.config import TrainConfig
from upft_ray.training.harness_torch import torchrun_command
from upft_ray.training.loop import LoopConfig

REPO = Path(__file__).resolve().parents[2]


def make_loop_config(root: Path, model_dir: Path, examples: Path, name: str, **train) -> LoopConfig:
    """Return (and write to ROOT/NAME/loop.json) a loop config on the synthetic data, metrics under ROOT/NAME."""
    run = root / name
    run.mkdir(parents=True)
    settings = dict(num_workers=2, zero_stage=2, micro_batch_size=2, max_length=128, learning_rate=1e-3,
                    checkpoint_every_steps=2, warmup_ratio=0.0)
    cfg = LoopConfig(train=TrainConfig(**{**settings, **train}), seed=0, model_path=str(model_dir),
                     examples_dir=str(examples), metrics_path=str(run / "metrics.jsonl"),
                     events_path=str(run / "events.jsonl"), tensorboard_dir=None, pad_token_id=0)
    (run / "loop.json").write_text(cfg.model_dump_json())
    return cfg


def torchrun(loop_json: Path, checkpoint_dir: Path, export_dir: Path | None, nproc: int = 2,
             kill_at: int = 0) -> subprocess.CompletedProcess:
    """Run the torch harness under torchrun (gloo) and return the finished process; ``kill_at`` > 0 runs the
    crash drill (bench/crash_drill.py: every rank SIGKILLed after that step's checkpoint) instead."""
    drill = {"script": REPO / "bench" / "crash_drill.py", "extra": ("--kill-at-step", str(kill_at))} if kill_at else {}
    command = torchrun_command(loop_json, checkpoint_dir, export_dir, nproc, **drill)
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)


_CACHE: dict = {}


def synthetic_data(tmp_path_factory) -> tuple[Path, Path]:
    """(model_dir, examples_dir), made once per session: a 2-layer random Qwen2, 120 UPFT-shaped examples."""
    from synthetic import TINY_QWEN2, write_random_model, write_upft_examples

    if "synthetic" not in _CACHE:
        root = tmp_path_factory.mktemp("synthetic")
        _CACHE["synthetic"] = (write_random_model(root / "model", TINY_QWEN2),
                               write_upft_examples(root / "examples", 120, TINY_QWEN2["vocab_size"], 12, 8, 40))
    return _CACHE["synthetic"]


def torchrun_zero2_run(tmp_path_factory) -> tuple[dict, Path, Path]:
    """A finished 2-rank torchrun (gloo) ZeRO-2 run, made once per session: (loop config, checkpoints, export)."""
    if "zero2" not in _CACHE:
        root = tmp_path_factory.mktemp("torchrun")
        cfg = make_loop_config(root, *synthetic_data(tmp_path_factory), "zero2")
        done = torchrun(root / "zero2" / "loop.json", root / "ckpt", root / "export")
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        _CACHE["zero2"] = (cfg, root / "ckpt", root / "export")
    return _CACHE["zero2"]


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory):
    """See :func:`synthetic_data`."""
    return synthetic_data(tmp_path_factory)


@pytest.fixture(scope="session")
def torchrun_zero2(tmp_path_factory):
    """See :func:`torchrun_zero2_run`."""
    return torchrun_zero2_run(tmp_path_factory)
