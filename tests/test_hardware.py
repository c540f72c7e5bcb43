"""precision/dtype `auto`: bf16 only where the hardware multiplies bf16 fast; explicit choices pass through."""

import torch

from upft_ray.hardware import bf16_is_fast
from upft_ray.inference import engine_dtype
from upft_ray.training.loop import resolve_precision


def test_explicit_choices_are_kept():
    assert resolve_precision("bf16", False) == "bf16" and resolve_precision("fp32", True) == "fp32"
    assert engine_dtype("bfloat16") == "bfloat16" and engine_dtype("float32") == "float32"


def test_auto_follows_the_cpu():
    fast = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert bf16_is_fast(use_gpu=False) == fast
    assert resolve_precision("auto", False) == ("bf16" if fast else "fp32")
    assert engine_dtype("auto") == ("bfloat16" if fast else "float32")
    assert bf16_is_fast(use_gpu=True) is (torch.cuda.is_available() and torch.cuda.is_bf16_supported())
