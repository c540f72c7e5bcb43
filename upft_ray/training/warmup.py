"""Compile DeepSpeed's CPU ops once, into the cache the training workers use.

``python -m upft_ray.training.warmup`` is run by scripts/setup.sh: the first ``deepspeed.initialize``
on CPU otherwise compiles ``deepspeed_shm_comm`` inside every fresh worker (70-90 s on 2 cores)."""

from __future__ import annotations

import logging
import os
import time

from upft_ray.runtime.cache import torch_extensions_dir


def warm_deepspeed_cpu_ops() -> float:
    """Build (or load from cache) DeepSpeed's shared-memory comm op; return the seconds it took."""
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(torch_extensions_dir()))
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    start = time.time()
    from deepspeed.accelerator import get_accelerator  # heavy: loaded when used

    if get_accelerator().device_name() == "cpu":
        get_accelerator().create_op_builder("ShareMemCommBuilder").load(verbose=False)
    return time.time() - start


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="[setup] %(message)s")
    logging.getLogger("upft.setup").info("DeepSpeed CPU ops ready (%.1fs)", warm_deepspeed_cpu_ops())
