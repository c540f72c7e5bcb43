"""Checkpoints load with weights_only=True: RNG states as tensors, DeepSpeed's files, no code."""

import json
import os
import pickle
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from loop_helpers import synthetic, torchrun_zero2  # noqa: F401 (fixtures)

from upft_ray.training.checkpointing import (
    install_safe_checkpoint_engine,
    own_optimizer_state,
    rng_state,
    safe_load,
    set_rng_state,
)


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


def test_a_resume_maps_the_checkpoint_and_keeps_no_file_of_it_mapped(tmp_path):
    """ZeRO 0/1/2 x fp32/bf16: the load reads DeepSpeed's files memory-mapped; after it, no file of the checkpoint
    is still mapped (the probe finds one per case when the engine keeps the loaded moments as they are), and the
    next step gives the weights the uninterrupted engine's next step gave."""
    done = subprocess.run([sys.executable, str(Path(__file__).parent / "resume_probe.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    cases = json.loads(done.stdout.strip().splitlines()[-1])
    assert [(c["stage"], c["precision"]) for c in cases] == [(s, p) for s in (0, 1, 2) for p in ("fp32", "bf16")]
    assert all(c["still_mapped"] == [] and c["same_weights_after_a_step"] for c in cases), cases


def test_a_file_torch_cannot_map_is_read_instead(tmp_path):
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

    class Engine:
        checkpoint_engine = TorchCheckpointEngine()

    engine = Engine()
    install_safe_checkpoint_engine(engine)
    torch.save({"w": torch.arange(3.0)}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    with pytest.raises(RuntimeError):
        torch.load(tmp_path / "legacy.pt", weights_only=True, mmap=True)
    assert torch.equal(engine.checkpoint_engine.load(str(tmp_path / "legacy.pt"))["w"], torch.arange(3.0))


def test_optimizer_state_gets_memory_of_its_own_once_per_tensor():
    model = torch.nn.Linear(3, 2)
    inner = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    inner.step()
    before = {id(p): {k: v for k, v in s.items()} for p, s in inner.state.items()}

    class Wrapper:  # DeepSpeed's wrappers hold the optimizer and may show its state as their own
        optimizer = inner
        state = inner.state

    assert own_optimizer_state(Wrapper()) == 2 * 3  # exp_avg, exp_avg_sq, step of weight and bias: copied once
    for p, state in inner.state.items():
        for key, value in state.items():
            assert torch.equal(value, before[id(p)][key]) and value.data_ptr() != before[id(p)][key].data_ptr()
