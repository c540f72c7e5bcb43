"""Training checkpoints that load without unpickling code: DeepSpeed state, per-rank RNG, progress.

A checkpoint directory holds what ``engine.save_checkpoint`` writes (``latest`` + ``TAG/*.pt``),
``rng_rank{r}.pt`` per rank and ``upft_state.json`` (rank 0). Checkpoints live on shared storage
that other pods can write, so nothing in them is unpickled as code:

- RNG states are saved as tensors (torch CPU, CUDA where used) and plain lists/ints (numpy's
  MT19937 key and position, Python's Mersenne state) and loaded with ``weights_only=True``.
- DeepSpeed's own files are read through :class:`SafeTorchCheckpointEngine`, installed on the
  engine before ``load_checkpoint``: every ``torch.load`` DeepSpeed 0.19.8 makes when resuming
  a dense (non-MoE) model goes through ``engine.checkpoint_engine.load`` (model states via
  ``SDLoaderFactory``, ZeRO optimizer shards via ``_get_all_zero_checkpoint_state_dicts``, the
  ZeRO-0 optimizer file), and ours passes ``weights_only=True``. Those files hold tensors and
  containers plus three DeepSpeed classes, allow-listed by name in :data:`DEEPSPEED_SAFE_GLOBALS`:
  ``LossScaler`` (the bf16/fp32 static loss scale: a few floats set through ``__dict__``),
  ``ZeroStageEnum`` (an ``int`` enum) and ``fragment_address`` (a namedtuple of two ints).
  Allow-listed classes are rebuilt with ``__new__`` plus their saved attributes; their ``__init__``
  and any other code never run. The other ``torch.load(weights_only=False)`` calls in DeepSpeed 0.19.8
  are on paths this loop never takes: MoE expert checkpoints (a fresh ``TorchCheckpointEngine`` in
  ``_load_checkpoint``), universal checkpoints (``base_optimizer.load_hp_checkpoint_state_from_checkpoint_dir``,
  ``deepspeed/checkpoint/``), ZeRO-3 NVMe-offload swap files (``stage3.py``), the decoupled/fast
  checkpoint engines (refused by :func:`install_safe_checkpoint_engine`) and ``deepspeed.utils.zero_to_fp32``
  (our export reads the files itself with ``weights_only=True``, see ``export.py``).

DeepSpeed's files are memory-mapped, not read into memory: a read copy of weights and AdamW moments came on top
of the engine's own (a bf16 resume then needed more memory than training: ``bench/resume_memory.py``), and every
rank of a node read its own copy of the model file; mapped pages are the page cache's, shared and reclaimable.
What the engine keeps from the load as it is (AdamW moments on the CPU: CPU training, optimizer offload) is then
given memory of its own, one tensor at a time, so no file of the checkpoint stays mapped (a deleted checkpoint
must not live on as ``.nfs*`` files, a rewritten one must not change the moments).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

from upft_ray.runtime.hardware import name_deepspeed_accelerator


def deepspeed_safe_globals() -> list:
    """Return the DeepSpeed classes a ZeRO checkpoint of this loop stores (allow-listed for weights_only)."""
    name_deepspeed_accelerator()  # a process that only reads checkpoints has not said which yet
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler  # heavy: loaded when used
    from deepspeed.runtime.zero.config import ZeroStageEnum  # heavy: loaded when used
    from deepspeed.utils.tensor_fragment import fragment_address  # heavy: loaded when used

    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]


def safe_load(path, map_location="cpu", mmap: bool = False):
    """``torch.load`` with ``weights_only=True`` and DeepSpeed's few checkpoint classes allowed; raises
    ``pickle.UnpicklingError`` for a file that would need any other global (e.g. code)."""
    import torch  # heavy: loaded when used

    with torch.serialization.safe_globals(deepspeed_safe_globals()):
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)


def install_safe_checkpoint_engine(engine) -> None:
    """Make every checkpoint file ``engine.load_checkpoint`` reads load with ``weights_only=True``."""
    from deepspeed.runtime.checkpoint_engine import torch_checkpoint_engine  # heavy: DeepSpeed on ranks only

    TorchCheckpointEngine = torch_checkpoint_engine.TorchCheckpointEngine

    class SafeTorchCheckpointEngine(TorchCheckpointEngine):
        def load(self, path: str, map_location=None):
            try:
                return safe_load(path, map_location=map_location, mmap=True)
            except (OSError, RuntimeError):  # a file system without mmap, or a file torch cannot map
                return safe_load(path, map_location=map_location)

    current = engine.checkpoint_engine
    if type(current) is not TorchCheckpointEngine:  # a decoupled/fast engine would bypass our load
        raise RuntimeError(f"unexpected DeepSpeed checkpoint engine {type(current).__name__}")
    safe = SafeTorchCheckpointEngine.__new__(SafeTorchCheckpointEngine)
    safe.__dict__.update(current.__dict__)
    engine.checkpoint_engine = safe


def rng_state(device) -> dict:
    """Return this process's RNG states as tensors and plain values (``weights_only``-loadable)."""
    import torch  # heavy: loaded when used

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, mt, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": version, "state": torch.tensor(mt, dtype=torch.int64),
                   "gauss_next": gauss_next},
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device) -> None:
    """Restore what :func:`rng_state` returned."""
    import torch  # heavy: loaded when used

    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(x) for x in p["state"].tolist()), p["gauss_next"]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def save_training_state(engine, directory: Path, rank: int, device, client_state: dict) -> None:
    """Write this rank's part of a checkpoint (every rank must call it: DeepSpeed saves collectively)."""
    import torch  # heavy: loaded when used

    engine.save_checkpoint(str(directory), tag=f"step_{client_state['step']:08d}", client_state=client_state)
    torch.save(rng_state(device), directory / f"rng_rank{rank}.pt")
    if rank == 0:
        (directory / "upft_state.json").write_text(json.dumps(client_state))


def load_training_state(engine, directory: Path, rank: int, device) -> dict:
    """Restore engine (weights, optimizer, scheduler) and this rank's RNG from ``directory``; return the
    client state saved with it (``step``, ``consumed_examples``, ...). Loads nothing as pickle code."""
    install_safe_checkpoint_engine(engine)
    load_path, client_state = engine.load_checkpoint(str(directory))
    if load_path is None:
        raise FileNotFoundError(f"no DeepSpeed checkpoint in {directory}")
    own_optimizer_state(engine.optimizer)
    set_rng_state(safe_load(directory / f"rng_rank{rank}.pt"), device)
    return client_state


def own_optimizer_state(optimizer) -> int:
    """Copy each CPU tensor of the state of ``optimizer`` and of the optimizers it wraps (``.optimizer``: DeepSpeed's
    wrappers) into memory of its own, one at a time, so none stays backed by a mapped checkpoint file; return how
    many were copied."""
    import torch  # heavy: loaded when used

    copied, seen, wrappers = 0, set(), set()
    while optimizer is not None and id(optimizer) not in wrappers:
        wrappers.add(id(optimizer))
        state = getattr(optimizer, "state", None)
        if isinstance(state, dict) and id(state) not in seen:  # a wrapper may show its inner optimizer's state
            seen.add(id(state))
            for per_param in state.values():
                for key, value in per_param.items() if isinstance(per_param, dict) else ():
                    if isinstance(value, torch.Tensor) and value.device.type == "cpu":
                        per_param[key] = value.clone()
                        copied += 1
        optimizer = getattr(optimizer, "optimizer", None)
    return copied

