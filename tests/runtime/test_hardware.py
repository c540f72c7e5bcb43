"""precision/dtype `auto`: bf16 only where the hardware multiplies bf16 fast; explicit choices pass through."""

import torch

from upft_ray.engine.settings import engine_dtype
from upft_ray.runtime.hardware import NATIVE_BF16_FLAGS, bf16_is_fast, cpu_flags
from upft_ray.training.loop import resolve_precision


def test_explicit_choices_are_kept():
    assert resolve_precision("bf16", False) == "bf16" and resolve_precision("fp32", True) == "fp32"
    assert engine_dtype("bfloat16") == "bfloat16" and engine_dtype("float32") == "float32"


def test_auto_follows_the_cpu():
    flags = cpu_flags()
    fast = bool(flags & NATIVE_BF16_FLAGS) if flags is not None else bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert bf16_is_fast(use_gpu=False) == fast
    assert resolve_precision("auto", False) == ("bf16" if fast else "fp32")
    assert engine_dtype("auto") == ("bfloat16" if fast else "float32")
    assert bf16_is_fast(use_gpu=True) is (torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def test_only_native_bf16_instructions_count_on_a_cpu(tmp_path):
    avx512 = frozenset({"fpu", "avx2", "avx512f", "avx512bw", "avx512vl", "avx512_vnni"})  # oneDNN emulates bf16
    assert not bf16_is_fast(False, avx512) and not bf16_is_fast(False, frozenset({"avx2"}))
    assert bf16_is_fast(False, avx512 | {"avx512_bf16"}) and bf16_is_fast(False, frozenset({"amx_bf16"}))
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16\n\nprocessor\t: 1\n")
    assert cpu_flags(info) == {"fpu", "avx512f", "avx512_bf16"}
    assert cpu_flags(tmp_path / "missing") is None
    (tmp_path / "arm").write_text("processor\t: 0\nFeatures\t: fp asimd bf16\n")
    assert cpu_flags(tmp_path / "arm") == {"fp", "asimd", "bf16"}
