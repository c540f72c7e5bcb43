"""What the hardware does fast: the one question `precision: auto` and `dtype: auto` ask."""

from __future__ import annotations


def bf16_is_fast(use_gpu: bool) -> bool:
    """Return True where bf16 matmuls run at least as fast as fp32: a GPU that supports bf16, or a CPU
    with AVX-512 BF16 / AMX (oneDNN's bf16 path). On AVX2-only CPUs torch falls back to a reference
    GEMM, ~30x slower than fp32 (bench/RESULTS.md)."""
    import torch

    if use_gpu:
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
