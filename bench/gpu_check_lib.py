"""Throughput figures of bench/gpu_check.py: tokens/s, MFU with its formula (bench/flops.py), peak memory, and
what the loop ran with (attention, loss path), read from a finished run's metrics and log."""

from __future__ import annotations

import re
import statistics
from pathlib import Path

from flops import flops_per_token
from synthetic import QWEN25_05B, QWEN25_15B, TINY_QWEN2

SHAPES = {"0.5b": QWEN25_05B, "1.5b": QWEN25_15B, "tiny": TINY_QWEN2}
MFU_FORMULA = ("MFU = tokens/s x FLOPs per token / (peak x GPUs); FLOPs per token = 6 (N - E) + 6 H V f + 12 L H s_eff "
               "(E: the embedding matrix, f: the share of tokens with loss on the chunked loss path, 1 on the "
               "reference one; s_eff = sum(s_i^2) / sum(s_i) over the examples' lengths: packed examples attend "
               "only to themselves); mfu_classic_6n: 6N + 12 L H s_eff (see bench/flops.py)")


def peak_flops(device_name: str) -> float | None:
    """Return the dense bf16 peak FLOP/s of one GPU named ``device_name`` (H100/H200 SXM: 989e12), or None."""
    return 989e12 if ("H100" in device_name or "H200" in device_name) else None


def loop_settings_used(log: Path) -> dict:
    """Return the attention implementation and loss path the loop logged it runs with (None where absent)."""
    text = log.read_text(errors="replace") if log.is_file() else ""
    found = re.search(r"attention: (\S+); loss: (\S+) path", text)
    return {"attention": found.group(1) if found else None, "loss_path": found.group(2) if found else None}


def throughput_figures(rows: list[dict], skip_steps: set[int], shape: dict, lengths, loss_tokens, log: Path,
                       peak: float | None, gpus: int) -> dict:
    """Return the median tokens/s over ``rows`` (metrics rows, steps 1-2 and ``skip_steps`` left out), MFU by
    MFU_FORMULA (None without a peak), the peak memory the loop logged, and the loop's attention and loss path."""
    timed = [r["tokens_per_s"] for r in rows if r["step"] > 2 and r["step"] not in skip_steps]
    if not timed:
        return {}
    used = loop_settings_used(log)
    flops = flops_per_token(shape, lengths, loss_tokens, used["loss_path"] or "reference")
    tps = statistics.median(timed)
    memory = [r["peak_memory_gib"] for r in rows if r.get("peak_memory_gib") is not None]
    return {"tokens_per_s": round(tps, 1), **used,
            "mfu": round(tps * flops["total"] / (peak * gpus), 4) if peak else None,
            "mfu_classic_6n": round(tps * flops["classic_6n"] / (peak * gpus), 4) if peak else None,
            "flops_per_token": {k: v for k, v in flops.items() if k != "loss_path"},
            "peak_memory_gib": round(max(memory), 2) if memory else None, "timed_steps": len(timed)}
