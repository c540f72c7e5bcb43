"""What the hardware does fast: the one question `precision: auto` and `dtype: auto` ask."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

from upft_ray.io.manifests import package_versions

NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})  # x86 instructions that multiply bf16 natively


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str] | None:
    """Return the CPU's feature flags from ``cpuinfo`` (Linux), or None where that file cannot be read."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return None


def bf16_is_fast(use_gpu: bool, flags: frozenset[str] | None = None) -> bool:
    """Return True where bf16 matmuls run at least as fast as fp32: a GPU that supports bf16, or a CPU
    with native bf16 instructions (AVX-512 BF16 or AMX; ``flags`` default to this CPU's).

    oneDNN's own check (``torch.ops.mkldnn._is_mkldnn_bf16_supported``) also says yes on AVX-512 CPUs
    without them, where bf16 is emulated and runs several times slower than fp32 (an Intel Xeon with
    AVX-512 but no AVX-512 BF16, 2026-11-26); on AVX2-only CPUs torch falls back to a reference GEMM,
    many times slower (bench/cpu_bf16.py). The oneDNN check is used only where the flags cannot be read."""
    import torch  # heavy: loaded only when a worker asks

    if use_gpu:
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    flags = cpu_flags() if flags is None else flags
    if flags is None:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return bool(flags & NATIVE_BF16_FLAGS)


def name_deepspeed_accelerator() -> None:
    """Set ``DS_ACCELERATOR`` (cuda where torch sees a GPU, else cpu) unless it is set: call before anything
    imports DeepSpeed (transformers does, when it is installed), which otherwise guesses and warns."""
    import torch  # heavy: loaded where DeepSpeed is about to be

    os.environ.setdefault("DS_ACCELERATOR", "cuda" if torch.cuda.is_available() else "cpu")


def machine_facts() -> dict:
    """Return what a recorded figure depends on: CPU model and count, whether it multiplies bf16 natively (what
    ``precision: auto`` and ``dtype: auto`` decide from), OS, package versions, the date (UTC)."""
    cpu = platform.processor()
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), cpu)
    except OSError:
        pass
    flags = cpu_flags()
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "platform": platform.platform(),
            # what `auto` picks on this CPU (bf16 only with native bf16 instructions); None: flags not readable
            "cpu_native_bf16": None if flags is None else bool(flags & NATIVE_BF16_FLAGS),
            "versions": package_versions(), "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}
