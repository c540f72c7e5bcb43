"""Old vs new loss path of the training objective, for ``bench/train_throughput.py --loss-paths`` (see there).

The two paths are ``upft_ray.training.objective``'s ``reference`` (logits at every position over the whole
vocabulary) and ``chunked`` (LM head and cross-entropy at loss positions only, in chunks)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from doc_blocks import markers, replace_block

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "bench" / "results" / "loss_paths.json"
BEGIN, END = markers("loss-paths", "bench/train_throughput.py --loss-paths")

# --loss-paths: a Qwen2.5-sized vocabulary on a small body (so the LM head weighs as it does on GPUs, and
# more), and the GPU check's UPFT example shape: 200-token prompts, t + EOS = 33 prefix tokens, 10% full
# solutions of 800 tokens, packed into 1,024-token rows, 2 rows per micro-batch.
LOSS_SHAPE = dict(vocab_size=151936, hidden_size=128, intermediate_size=384, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True, max_position_embeddings=4096)
LOSS_DATA = dict(examples=400, prompt=200, prefix=33, full=800, full_share=0.1, row=1024, micro=2)


def loss_bench_setup():
    """Return (model, store, micro-batches of rows) for the loss-path comparison; seeded: every process
    that calls it gets the same weights and rows."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**LOSS_SHAPE)).float().train()
    return (model, *upft_rows(LOSS_SHAPE["vocab_size"]))


def upft_rows(vocab_size: int):
    """Return (store, micro-batches of packed rows) of LOSS_DATA's UPFT-shaped examples, token ids below
    ``vocab_size``; seeded: every call returns the same."""
    import numpy as np

    from upft_ray.training.packing import ExampleStore, epoch_rows

    d, rng = LOSS_DATA, np.random.default_rng(0)
    lengths = d["prompt"] + np.where(rng.random(d["examples"]) < d["full_share"], d["full"], d["prefix"])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    store = ExampleStore(rng.integers(1, vocab_size, size=int(offsets[-1])).astype(np.int32),
                         offsets, np.full(d["examples"], d["prompt"]))
    rows = epoch_rows(store.lengths, 0, 0, d["row"])
    return store, [rows[i:i + d["micro"]] for i in range(0, len(rows) - d["micro"] + 1, d["micro"])]


def loss_step_peak(path: str) -> dict:
    """Return the peak RSS growth (MiB) of one loss step (forward + backward, example normalisation) on
    ``path``, measured in this process from just before the step (the kernel's peak-RSS mark is reset there)."""
    from upft_ray.training.objective import global_normaliser, micro_batch_loss
    from upft_ray.training.packing import collate_rows

    model, store, micro = loss_bench_setup()
    rows = micro[0]
    batch = collate_rows(rows, store, pad_id=0)
    before = _rss_mib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM (the peak RSS) to the current RSS
    loss = micro_batch_loss(model, batch, "example", "cpu", path) / global_normaliser(rows, store, "example")
    loss.backward()
    peak = _rss_mib("VmHWM")
    return {"path": path, "rss_before_mib": round(before, 1), "peak_rss_mib": round(peak, 1),
            "loss_step_peak_mib": round(peak - before, 1), "loss": float(loss.detach())}


def _rss_mib(field: str) -> float:
    """Return ``field`` (VmRSS: now, VmHWM: the peak) of /proc/self/status, in MiB."""
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def probe_loss_step(path: str) -> dict:
    """Run :func:`loss_step_peak` for ``path`` in a fresh process (peaks of one path do not hide the other's)."""
    return run_probe("--loss-step-probe", path)


def run_probe(flag: str, value: str) -> dict:
    """Return the PROBE figures that ``bench/train_throughput.py FLAG VALUE`` prints, run in a fresh process."""
    script = REPO_ROOT / "bench" / "train_throughput.py"
    done = subprocess.run([sys.executable, str(script), flag, value], capture_output=True, text=True,
                          timeout=900, check=True)
    return json.loads(next(x for x in done.stdout.splitlines() if x.startswith("PROBE "))[6:])


def time_loss_paths(model, store, micro, steps: int) -> dict:
    """Return each path's train-step tokens/s (median over ``steps`` steps after one warm-up) and its steps'
    seconds: the two paths take turns on the same micro-batches (ABBA order), with one torch AdamW."""
    import statistics

    import numpy as np
    import torch

    from upft_ray.training.objective import global_normaliser, micro_batch_loss
    from upft_ray.training.packing import collate_rows

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    rates: dict[str, list[float]] = {"reference": [], "chunked": []}
    for k in range(steps + 1):
        rows = micro[k % len(micro)]
        batch = collate_rows(rows, store, pad_id=0)
        tokens = sum(int(store.lengths[np.asarray(r)].sum()) for r in rows)
        for path in (("reference", "chunked") if k % 2 == 0 else ("chunked", "reference")):
            started = time.perf_counter()
            loss = micro_batch_loss(model, batch, "example", "cpu", path) / global_normaliser(rows, store, "example")
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if k > 0:
                rates[path].append(tokens / (time.perf_counter() - started))
    return {path: {"tokens_per_s": statistics.median(r), "steps": len(r)} for path, r in rates.items()}


def head_flops(shape: dict, loss_fraction: float) -> dict:
    """Return the LM head's share of 6N training FLOPs per token for a Qwen2 of ``shape``, and the FLOPs per
    token of the chunked path over the reference's when ``loss_fraction`` of the tokens carry loss: the head
    then runs forward twice (once more in backward, recomputed) and backward once on those tokens only, 8HV
    against 6HV on every token (attention left out; tied head: the embedding is the head)."""
    from flops import parameters

    params, head = parameters(shape), shape["hidden_size"] * shape["vocab_size"]
    return {"parameters": params, "head_share_of_6n": head / params,
            "chunked_over_reference": (6 * params - 6 * head + 8 * head * loss_fraction) / (6 * params)}


def compare_loss_paths(steps: int) -> None:
    """Measure both loss paths (see the module docstring); write RESULTS and RESULTS.md's loss-paths block."""
    import numpy as np
    import torch
    from synthetic import QWEN25_05B

    from upft_ray.io.manifests import write_json_atomic
    from upft_ray.runtime.hardware import machine_facts
    from upft_ray.training.objective import CHUNK_LOGITS

    load_before = os.getloadavg()
    model, store, micro = loss_bench_setup()
    used = [r for rows in micro[:steps + 1] for r in rows]
    real = sum(int(store.lengths[np.asarray(r)].sum()) for r in used)
    loss_fraction = sum(int(store.loss_tokens[np.asarray(r)].sum()) for r in used) / real
    timing = time_loss_paths(model, store, micro, steps)
    memory = {path: probe_loss_step(path) for path in ("reference", "chunked")}
    report = {"command": f"bench/train_throughput.py --loss-paths --steps {steps}", "machine": machine_facts(),
              "torch_threads": torch.get_num_threads(), "load_avg_1min": [load_before[0], os.getloadavg()[0]],
              "model_shape": LOSS_SHAPE, "data": LOSS_DATA, "loss_fraction": loss_fraction,
              "chunk_rows": CHUNK_LOGITS // LOSS_SHAPE["vocab_size"],
              "paths": {p: {**timing[p], **memory[p]} for p in timing},
              "tokens_per_s_chunked_over_reference":
                  timing["chunked"]["tokens_per_s"] / timing["reference"]["tokens_per_s"],
              "loss_relative_difference": abs(memory["chunked"]["loss"] / memory["reference"]["loss"] - 1),
              "bench_model_flops": head_flops(LOSS_SHAPE, loss_fraction),
              "qwen25_05b_flops": head_flops(QWEN25_05B, loss_fraction)}
    write_json_atomic(RESULTS, report)
    block = results_block(report)
    replace_block(REPO_ROOT / "bench" / "RESULTS.md", BEGIN, END, block)
    print(block)


def results_block(report: dict) -> str:
    """Return RESULTS.md's loss-paths block (markers included)."""
    m, paths, shape, flops = report["machine"], report["paths"], report["model_shape"], report["qwen25_05b_flops"]
    load = report["load_avg_1min"]
    quiet = "quiet" if max(load) < 3 else "NOT quiet: other work shared the CPUs, so tokens/s are noisy"
    ref, new = paths["reference"], paths["chunked"]
    return "\n".join([
        BEGIN, "", f"`python {report['command']}`, {m['date_utc']} UTC, {m['cpu']} x{m['cpu_count']}, "
        f"{report['torch_threads']} torch threads; 1-minute load average {load[0]:.2f} before, {load[1]:.2f} after "
        f"({quiet}). Random Qwen2, vocabulary {shape['vocab_size']:,}, hidden {shape['hidden_size']}, "
        f"{shape['num_hidden_layers']} layers ({report['bench_model_flops']['parameters']:,} parameters, the LM head "
        f"{report['bench_model_flops']['head_share_of_6n']:.0%} of them), fp32; packed {report['data']['row']}-token "
        f"rows, {report['data']['micro']} per micro-batch; {report['loss_fraction']:.1%} of the tokens carry loss.", "",
        "| loss path | train tokens/s (median) | steps | peak RSS growth of one loss step, forward + backward (MiB) |",
        "|---|---|---|---|",
        f"| reference: logits at every position, full vocabulary | {ref['tokens_per_s']:,.0f} | {ref['steps']} "
        f"| {ref['loss_step_peak_mib']:,.0f} |",
        f"| chunked: LM head at loss positions, {report['chunk_rows']:,} rows a chunk | {new['tokens_per_s']:,.0f} "
        f"| {new['steps']} | {new['loss_step_peak_mib']:,.0f} |", "",
        f"**chunked / reference tokens/s: {report['tokens_per_s_chunked_over_reference']:.2f}**; loss-step peak "
        f"memory reference / chunked: {ref['loss_step_peak_mib'] / new['loss_step_peak_mib']:.1f}x; the two losses "
        f"differ by {report['loss_relative_difference']:.1e} (relative). This body is tiny, so the LM head is most "
        f"of the work here; at the Qwen2.5-0.5B shape it is {flops['head_share_of_6n']:.1%} of 6N, and with this "
        f"loss share the chunked path needs {flops['chunked_over_reference']:.2f}x the reference's FLOPs per token "
        "(attention left out; a prediction from the shapes, not a measurement).", "", END])
