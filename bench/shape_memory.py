"""Does the training loop's memory stay flat over a run? RssAnon per step with and without padded shapes (CPU).

    PYTHONPATH=$PWD python bench/shape_memory.py                 # multiples 1 and 64, 40 steps each
    PYTHONPATH=$PWD python bench/shape_memory.py --steps 20 --multiples 1,8,64

On CPUs every new tensor shape costs kernels and buffers (oneDNN's, MKL's) that stay in the process: a loop
whose micro-batches come in one shape per packed row length and loss-token count grows for as long as new
shapes come. ``train.pad_to_multiple_of`` pads a micro-batch's width and its loss positions to a multiple
(masked: the same loss and gradients, ``tests/training/test_objective.py``). This runs the real loop
(``torchrun -m upft_ray.training.harness_torch``, one rank, DeepSpeed ZeRO-0, bf16 as the 0.5B sweep trains on
this machine) on a random Qwen2 with Qwen2.5's vocabulary and a small body (~100M parameters), UPFT-shaped
examples with prompts of 50-250 tokens, packed into 512-token rows, 4 rows a micro-batch, 2 micro-batches a
step, once per multiple, and samples the rank's RssAnon every 0.2 s against the step it is on. Figures go to
``bench/results/shape_memory.json`` and RESULTS' block.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import psutil
from doc_blocks import markers, replace_block
from synthetic import write_random_model, write_upft_examples

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "shape_memory.json"
BEGIN, END = markers("shape_memory", "bench/shape_memory.py")
SHAPE = dict(vocab_size=151936, hidden_size=512, intermediate_size=1536, num_hidden_layers=8, num_attention_heads=8,
             num_key_value_heads=2, tie_word_embeddings=True, max_position_embeddings=4096)
DATA = dict(prompt=150, spread=100, prefix=32, full=300, row=512, micro=4, accumulation=2)
GIB = 2**30


def _loop_json(work: Path, multiple: int) -> Path:
    from upft_ray.config import TrainConfig
    from upft_ray.training.loop import LoopConfig

    train = TrainConfig(num_workers=1, zero_stage=0, precision="bf16", micro_batch_size=DATA["micro"],
                        gradient_accumulation_steps=DATA["accumulation"], max_length=DATA["row"], packing=True,
                        warmup_ratio=0.0, export_dtype="float32", pad_to_multiple_of=multiple)
    run = work / f"multiple-{multiple}"
    run.mkdir()
    loop = LoopConfig(train=train, seed=0, model_path=str(work / "model"), examples_dir=str(work / "examples"),
                      metrics_path=str(run / "metrics.jsonl"), events_path=str(run / "events.jsonl"),
                      tensorboard_dir=None, pad_token_id=0)
    (run / "loop.json").write_text(loop.model_dump_json())
    return run


def _anon(process: psutil.Process) -> int:
    with open(f"/proc/{process.pid}/status") as fh:
        return next((int(line.split()[1]) * 1024 for line in fh if line.startswith("RssAnon:")), 0)  # 0: a zombie


def _steps_done(metrics: Path) -> int:
    lines = metrics.read_text().splitlines() if metrics.is_file() else []
    return json.loads(lines[-1])["step"] if lines else 0


def run_loop(run: Path) -> dict:
    """Train ``run``'s loop to its end under torchrun, sampling the rank's RssAnon; return its figures."""
    from upft_ray.training.harness_torch import torchrun_command

    log = (run / "loop.log").open("w")
    launcher = subprocess.Popen(torchrun_command(run / "loop.json", run / "ckpt"), cwd=REPO, stdout=log,
                                stderr=subprocess.STDOUT)
    floor_at_step: dict[int, int] = {}  # the least RssAnon seen while on a step: what the process keeps
    started = time.time()
    while launcher.poll() is None and time.time() - started < 3600:
        try:
            anon = max((_anon(p) for p in psutil.Process(launcher.pid).children(recursive=True)), default=0)
        except (OSError, RuntimeError, psutil.Error):
            anon = 0  # a process came or went between two looks
        step = _steps_done(run / "metrics.jsonl")
        if anon:
            floor_at_step[step] = min(floor_at_step.get(step, anon), anon)
        time.sleep(0.2)
    if launcher.wait(timeout=60) != 0:
        raise RuntimeError(f"the loop failed: {(run / 'loop.log').read_text()[-3000:]}")
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = sorted(s for s in floor_at_step if 0 < s < len(rows))  # s steps done, s+1 training (not the export)
    return {"steps": len(rows), "rss_anon_gib_by_step": {s: round(floor_at_step[s] / GIB, 3) for s in steps},
            "tokens_per_s": round(statistics.median(r["tokens_per_s"] for r in rows if r["step"] > 2), 1),
            "seconds": round(time.time() - started, 1)}


def _params(model_dir: Path) -> int:
    from safetensors import safe_open

    total = 0
    for shard in model_dir.glob("*.safetensors"):
        with safe_open(str(shard), "pt") as weights:
            total += sum(math.prod(weights.get_slice(name).get_shape()) for name in weights.keys())
    return total


def summary(figures: dict) -> dict:
    """Return the RssAnon kept after the first 5 steps, at the last step, and the growth between (GiB)."""
    by_step = {int(k): v for k, v in figures["rss_anon_gib_by_step"].items()}
    first, last = by_step[min(k for k in by_step if k >= 5)], by_step[max(by_step)]
    return {"after_5_steps_gib": first, "at_end_gib": last, "growth_gib": round(last - first, 3)}


def render(result: dict) -> str:
    """Return RESULTS' block for ``result``."""
    lines = [BEGIN, f"Command: `{result['command']}` ({result['date']}; {result['machine']}). Loop: "
             f"{result['params']:,} parameters, bf16, ZeRO-0, one rank; {result['steps']} steps of "
             f"{DATA['micro'] * DATA['accumulation']} packed {DATA['row']}-token rows.", "",
             "| train.pad_to_multiple_of | RssAnon after 5 steps | at the end | growth | tokens/s (median) |",
             "|---|---|---|---|---|"]
    for multiple, row in result["runs"].items():
        lines.append(f"| {multiple} | {row['after_5_steps_gib']:.2f} GiB | {row['at_end_gib']:.2f} GiB"
                     f" | **{row['growth_gib']:+.2f} GiB** | {row['tokens_per_s']:,.0f} |")
    return "\n".join([*lines, END])


def main() -> None:
    """Run the benchmark (module docstring); write the JSON and RESULTS' block."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per run (sizes the example set)")
    parser.add_argument("--multiples", default="1,64", help="train.pad_to_multiple_of values, comma-separated")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="upft-shape-bench-"))
    mean_tokens = DATA["prompt"] + 0.9 * (DATA["prefix"] + 1) + 0.1 * DATA["full"]
    examples = int(args.steps * DATA["micro"] * DATA["accumulation"] * DATA["row"] * 0.97 / mean_tokens)
    write_random_model(work / "model", SHAPE, dtype="bfloat16")
    write_upft_examples(work / "examples", examples, SHAPE["vocab_size"], DATA["prompt"], DATA["prefix"],
                        DATA["full"], prompt_spread=DATA["spread"])
    runs = {}
    for multiple in map(int, args.multiples.split(",")):
        figures = run_loop(_loop_json(work, multiple))
        runs[str(multiple)] = {**figures, **summary(figures)}
        print(json.dumps({"multiple": multiple, **runs[str(multiple)]}), flush=True)
    flags = "".join(f" --{k} {v}" for k, v, d in (("steps", args.steps, 40), ("multiples", args.multiples, "1,64"))
                    if v != d)
    params = _params(work / "model")
    result = {"command": f"PYTHONPATH=$PWD python bench/shape_memory.py{flags}", "date": time.strftime("%Y-%m-%d"),
              "machine": f"{os.cpu_count()} CPUs", "params": params, "steps": min(r["steps"] for r in runs.values()),
              "runs": runs}
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    replace_block(REPO / "bench" / "RESULTS.md", BEGIN, END, render(result))
    shutil.rmtree(work, ignore_errors=True)
    print(render(result))


if __name__ == "__main__":
    main()
