"""Checkpoints load with weights_only=True: RNG states as tensors, DeepSpeed's files, no code."""

import os
import pickle
import random

import numpy as np
import pytest
import torch
from loop_helpers import synthetic, torchrun_zero2  # noqa: F401 (fixtures)

from upft_ray.training.checkpointing import install_safe_checkpoint_engine, rng_state, safe_load, set_rng_state


def _draw():
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]


def test_rng_state_roundtrips_through_a_weights_only_load(tmp_path):
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    np.random.randn()  # leaves a cached gaussian in numpy's state
    torch.save(rng_state(torch.device("cpu")), tmp_path / "rng.pt")
    expected = _draw()
    _draw()
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True), torch.device("cpu"))
    assert _draw() == expected


class _Payload:
    def __reduce__(self):
        return (os.system, ("true",))


def test_a_file_that_would_run_code_is_refused(tmp_path):
    torch.save({"step": 1, "evil": _Payload()}, tmp_path / "evil.pt")
    with pytest.raises(pickle.UnpicklingError):
        safe_load(tmp_path / "evil.pt")


def test_deepspeed_reads_checkpoints_through_the_safe_engine(tmp_path):
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

    class Engine:  # DeepSpeed's engine keeps its checkpoint engine in this attribute
        checkpoint_engine = TorchCheckpointEngine()

    engine = Engine()
    install_safe_checkpoint_engine(engine)
    torch.save({"module": {"w": torch.ones(2)}}, tmp_path / "ok.pt")
    torch.save({"evil": _Payload()}, tmp_path / "evil.pt")
    assert torch.equal(engine.checkpoint_engine.load(str(tmp_path / "ok.pt"))["module"]["w"], torch.ones(2))
    with pytest.raises(pickle.UnpicklingError):
        engine.checkpoint_engine.load(str(tmp_path / "evil.pt"))


def test_every_file_of_a_training_checkpoint_loads_weights_only(torchrun_zero2):
    _, ckpt, _ = torchrun_zero2
    files = sorted(ckpt.rglob("*.pt"))
    assert any("optim_states" in f.name for f in files) and any(f.name.startswith("rng_rank") for f in files)
    for f in files:
        safe_load(f)
