"""Activation checkpointing modes (``train.gradient_checkpointing``: false, true, selective), for
``bench/train_throughput.py --checkpointing`` (see there): tokens/s of forward + backward and the peak memory
of one such step, each mode in the same run.

The model is deeper and narrower than the loss-path bench's and has a small vocabulary, so activations, not
the LM head, are what a step holds; the data are the same UPFT-shaped packed rows, trained on the chunked
loss path (the loop's default)."""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

from doc_blocks import markers, replace_block
from loss_paths_lib import LOSS_DATA, _rss_mib, run_probe, upft_rows

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "bench" / "results" / "checkpointing.json"
BEGIN, END = markers("checkpointing", "bench/train_throughput.py --checkpointing")
SHAPE = dict(vocab_size=4096, hidden_size=256, intermediate_size=768, num_hidden_layers=8, num_attention_heads=8,
             num_key_value_heads=2, tie_word_embeddings=True, max_position_embeddings=4096)
MODES = {"none": False, "full": True, "selective": "selective"}


def setup(mode: str):
    """Return (model with checkpointing ``mode``, store, micro-batches of rows); seeded, so every process and
    mode gets the same weights and rows."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from upft_ray.training.memory import enable_checkpointing

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**SHAPE, attn_implementation="sdpa")).float().train()
    enable_checkpointing(model, MODES[mode])
    return (model, *upft_rows(SHAPE["vocab_size"]))


def _step(model, store, rows) -> float:
    """Run forward + backward of one micro-batch on the chunked path; return the loss."""
    from upft_ray.training.objective import global_normaliser, micro_batch_loss
    from upft_ray.training.packing import collate_rows

    batch = collate_rows(rows, store, pad_id=0)
    loss = micro_batch_loss(model, batch, "example", "cpu", "chunked") / global_normaliser(rows, store, "example")
    loss.backward()
    return float(loss.detach())


def step_peak(mode: str) -> dict:
    """Return the peak RSS growth (MiB) of one forward + backward in ``mode``, measured in this process."""
    model, store, micro = setup(mode)
    before = _rss_mib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM (the peak RSS) to the current RSS
    loss = _step(model, store, micro[0])
    peak = _rss_mib("VmHWM")
    return {"mode": mode, "step_peak_mib": round(peak - before, 1), "loss": loss}


def probe(mode: str) -> dict:
    """Run :func:`step_peak` for ``mode`` in a fresh process (one mode's peak does not hide another's)."""
    return run_probe("--checkpointing-probe", mode)


def time_modes(steps: int) -> dict:
    """Return each mode's forward + backward tokens/s (median over ``steps`` steps after one warm-up): the
    modes take turns on the same micro-batches, in a rotating order, on copies of one model."""
    import numpy as np

    models = {}
    for mode in MODES:
        models[mode], store, micro = setup(mode)
    rates: dict[str, list[float]] = {mode: [] for mode in MODES}
    order = list(MODES)
    for k in range(steps + 1):
        rows = micro[k % len(micro)]
        tokens = sum(int(store.lengths[np.asarray(r)].sum()) for r in rows)
        for mode in order[k % 3:] + order[:k % 3]:
            started = time.perf_counter()
            _step(models[mode], store, rows)
            models[mode].zero_grad(set_to_none=True)
            if k > 0:
                rates[mode].append(tokens / (time.perf_counter() - started))
    return {mode: {"tokens_per_s": statistics.median(r), "steps": len(r)} for mode, r in rates.items()}


def compare_checkpointing(steps: int) -> None:
    """Measure every mode (see the module docstring); write RESULTS and RESULTS.md's checkpointing block."""
    import torch

    from upft_ray.io.manifests import write_json_atomic
    from upft_ray.runtime.hardware import machine_facts

    load_before = os.getloadavg()
    timing = time_modes(steps)
    memory = {mode: probe(mode) for mode in MODES}
    report = {"command": f"bench/train_throughput.py --checkpointing --steps {steps}", "machine": machine_facts(),
              "torch_threads": torch.get_num_threads(), "load_avg_1min": [load_before[0], os.getloadavg()[0]],
              "model_shape": SHAPE, "data": LOSS_DATA, "modes": {m: {**timing[m], **memory[m]} for m in MODES}}
    write_json_atomic(RESULTS, report)
    block = results_block(report)
    replace_block(REPO_ROOT / "bench" / "RESULTS.md", BEGIN, END, block)
    print(block)


def results_block(report: dict) -> str:
    """Return RESULTS.md's checkpointing block (markers included)."""
    m, modes, shape, load = report["machine"], report["modes"], report["model_shape"], report["load_avg_1min"]
    quiet = "quiet" if max(load) < 3 else "NOT quiet: other work shared the CPUs, so tokens/s are noisy"
    none = modes["none"]
    rows = [f"| {name} | {v['tokens_per_s']:,.0f} ({v['tokens_per_s'] / none['tokens_per_s']:.2f}x) | {v['steps']} "
            f"| {v['step_peak_mib']:,.0f} ({v['step_peak_mib'] / none['step_peak_mib']:.2f}x) |"
            for name, v in modes.items()]
    return "\n".join([
        BEGIN, "", f"`python {report['command']}`, {m['date_utc']} UTC, {m['cpu']} x{m['cpu_count']}, "
        f"{report['torch_threads']} torch threads; 1-minute load average {load[0]:.2f} before, {load[1]:.2f} after "
        f"({quiet}). Random Qwen2, {shape['num_hidden_layers']} layers, hidden {shape['hidden_size']}, vocabulary "
        f"{shape['vocab_size']:,}, fp32, SDPA attention, the chunked loss path; packed {report['data']['row']}-token "
        f"rows, {report['data']['micro']} per micro-batch. Forward + backward only (the optimizer step is the same "
        "in every mode).", "",
        "| `train.gradient_checkpointing` | forward + backward tokens/s (vs none) | steps | peak RSS growth of "
        "one step, MiB (vs none) |", "|---|---|---|---|", *rows, "",
        "On CPU the recompute costs what it costs on a GPU only roughly: the elementwise ops selective "
        "recomputes are cheap next to matmuls on both, but their share of a CPU step is larger.", "", END])
