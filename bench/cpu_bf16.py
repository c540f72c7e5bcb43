"""bf16 against fp32 on this CPU: what ``train.precision: auto`` and ``engine.dtype: auto`` decide from.

    .venv/bin/python bench/cpu_bf16.py      # bench/results/cpu_bf16.json and the "cpu-bf16" block of bench/RESULTS.md

Each part runs in a fresh process per dtype (the other dtype's kernels and caches not in it):
1. ``matmul``: one 512x576 @ 576x1536 product on one thread (SmolLM2-135M's MLP at 512 tokens), median of 5.
2. ``train_step``: the bundled SmolLM2-135M-Instruct, forward + backward on 2 rows of 256 tokens (2 threads),
   weights in the dtype (as DeepSpeed's bf16 module), median of 3 after one warm-up step.
3. ``generate``: vLLM on the bundled model with upft-ray's engine arguments, 32 prompts x 64 greedy tokens, in
   this process; generated tokens/s.
Also the CPU's flags and what ``upft_ray.runtime.hardware.bf16_is_fast`` says here.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]
from doc_blocks import markers, replace_block  # noqa: E402
from fresh_process import run_fresh  # noqa: E402

RESULTS = REPO / "bench" / "results" / "cpu_bf16.json"
BEGIN, END = markers("cpu-bf16", "bench/cpu_bf16.py")
PARTS = ("matmul", "train_step", "generate")


def matmul_seconds(dtype) -> float:
    """Return the median seconds of one 512x576 @ 576x1536 product in ``dtype`` on one thread."""
    import torch

    torch.set_num_threads(1)
    a, b = torch.randn(512, 576, dtype=dtype), torch.randn(576, 1536, dtype=dtype)
    a @ b  # first call: kernel selection
    times = []
    for _ in range(5):
        started = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def train_step_seconds(dtype) -> float:
    """Return the median seconds of a forward + backward of the bundled model on 2 x 256 tokens in ``dtype``."""
    import torch
    from transformers import AutoModelForCausalLM

    from upft_ray.engine.models import prepare_bundled_model

    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(prepare_bundled_model("smollm2-135m-instruct"), dtype=dtype).train()
    ids = torch.randint(0, model.config.vocab_size, (2, 256))
    times = []
    for _ in range(4):  # the first is a warm-up
        started = time.perf_counter()
        model(input_ids=ids, labels=ids).loss.backward()
        model.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:])


def generate_tokens_per_s(dtype_name: str) -> float:
    """Return vLLM's generated tokens/s on the bundled model in ``dtype_name``: 32 prompts x 64 greedy tokens."""
    from upft_ray.config import EngineConfig
    from upft_ray.engine.models import prepare_bundled_model
    from upft_ray.engine.settings import engine_env, engine_kwargs

    engine = EngineConfig(dtype=dtype_name)
    engine_env(engine, in_process_core=True)
    from vllm import LLM, SamplingParams

    llm = LLM(model=str(prepare_bundled_model("smollm2-135m-instruct")), **engine_kwargs(engine, 0))
    prompts = [f"Question {i}: what is {i} + {2 * i}? Explain step by step." for i in range(32)]
    params = SamplingParams(max_tokens=64, min_tokens=64, temperature=0.0)
    started = time.perf_counter()
    outputs = llm.generate(prompts, params, use_tqdm=False)
    seconds = time.perf_counter() - started
    return sum(len(o.outputs[0].token_ids) for o in outputs) / seconds


def probe(part: str, dtype_name: str) -> float:
    """Run one part in one dtype (in this process); return its figure."""
    import torch

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype_name]
    return {"matmul": lambda: matmul_seconds(dtype), "train_step": lambda: train_step_seconds(dtype),
            "generate": lambda: generate_tokens_per_s(dtype_name)}[part]()


def run_probe(part: str, dtype_name: str) -> float:
    """Run ``probe(part, dtype_name)`` in a fresh process; return its figure."""
    return float(run_fresh(__file__, "--probe", part, dtype_name))


def measure() -> dict:
    """Return every part in both dtypes, the CPU's bf16 flags and the auto decision, as recorded."""
    from upft_ray.runtime.hardware import bf16_is_fast, cpu_flags, machine_facts

    flags = cpu_flags()
    figures = {part: {dtype: run_probe(part, dtype) for dtype in ("float32", "bfloat16")} for part in PARTS}
    return {"command": "bench/cpu_bf16.py", "machine": machine_facts(), "figures": figures,
            "bf16_flags": sorted((flags or set()) & {"avx512_bf16", "amx_bf16", "avx512f", "avx2"}),
            "flags_readable": flags is not None, "bf16_is_fast": bf16_is_fast(use_gpu=False)}


def render(report: dict) -> str:
    """Return RESULTS.md's cpu-bf16 block (markers included) from the recorded JSON."""
    m, f = report["machine"], report["figures"]
    flags = ", ".join(report["bf16_flags"]) or "none of avx2, avx512f, avx512_bf16, amx_bf16"
    rows = [("one 512x576 @ 576x1536 matmul, 1 thread (ms)", f["matmul"], 1e3, True),
            ("SmolLM2-135M forward + backward, 2 x 256 tokens, 2 threads (s)", f["train_step"], 1.0, True),
            ("vLLM generation, 32 prompts x 64 tokens (generated tokens/s)", f["generate"], 1.0, False)]
    lines = [BEGIN, f"`python {report['command']}`, {m['date_utc']} UTC, {m['cpu']} x{m['cpu_count']}; CPU flags "
             f"among avx2 / avx512f / avx512_bf16 / amx_bf16: {flags}; `bf16_is_fast` here: "
             f"**{report['bf16_is_fast']}**.", "", "| what | float32 | bfloat16 | bf16 vs fp32 |", "|---|---|---|---|"]
    for label, pair, scale, is_time in rows:  # slowdown: bf16's time / fp32's, or fp32's rate / bf16's
        slowdown = pair["bfloat16"] / pair["float32"] if is_time else pair["float32"] / pair["bfloat16"]
        verdict = f"{slowdown:.1f}x slower" if slowdown >= 1 else f"{1 / slowdown:.1f}x faster"
        lines.append(f"| {label} | {pair['float32'] * scale:,.2f} | {pair['bfloat16'] * scale:,.2f} | {verdict} |")
    return "\n".join(lines + [END])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--probe", nargs=2, metavar=("PART", "DTYPE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        print(probe(*args.probe))
        return
    from upft_ray.io.manifests import write_json_atomic

    write_json_atomic(RESULTS, measure())
    block = render(json.loads(RESULTS.read_text()))
    replace_block(REPO / "bench" / "RESULTS.md", BEGIN, END, block)
    print(block)


if __name__ == "__main__":
    main()
