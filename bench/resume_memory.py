"""Does resuming a training need more memory than training? Peak anonymous RSS of a checkpoint load vs a step, CPU.

    PYTHONPATH=$PWD python bench/resume_memory.py            # 0.5B (Qwen2.5-0.5B's shape), ZeRO-0, fp32 and bf16
    PYTHONPATH=$PWD python bench/resume_memory.py --shape 170m --stages 0,1

The 0.5B sweep (``configs/ablation-qwen05b.yaml``) once ran out of memory at a resume; the config then turned
checkpoints off. This measures, with the loop's own pieces (``deepspeed_config``, ``plan_memory``,
``save_training_state`` / ``load_training_state``), a random model built from a config in the precision's dtype
(as the loop loads it), gloo, one rank:

1. ``save``: one step, then a checkpoint (weights, AdamW moments, scheduler, RNG), as the loop writes it;
2. ``fresh``: a new engine and three steps: the peak a training holds (``RssAnon``, sampled every 2 ms);
3. ``resume``: a new engine, the checkpoint loaded (the peak during the load), then three steps.

Each in a fresh process (``ru_maxrss`` would count the checkpoint's page cache, RssAnon does not). Micro-batch:
one row of ``--tokens`` tokens. Figures go to ``bench/results/resume_memory.json`` and RESULTS' block.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from doc_blocks import markers, replace_block

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "resume_memory.json"
BEGIN, END = markers("resume_memory", "bench/resume_memory.py")
SHAPES = {
    "0.5b": dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                 num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True),
    "170m": dict(vocab_size=32000, hidden_size=1024, intermediate_size=2816, num_hidden_layers=12,
                 num_attention_heads=16, num_key_value_heads=4, tie_word_embeddings=True),
}
GIB = 2**30


def _anon_bytes() -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("RssAnon:"))


class PeakAnon:
    """Context manager: the peak RssAnon of this process while the block runs (``.peak``, bytes)."""

    def __enter__(self):
        self.peak, self._stop = _anon_bytes(), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, _anon_bytes())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _anon_bytes())


def child(kind: str, shape: str, stage: int, precision: str, tokens: int, checkpoint: Path) -> dict:
    """Run one measurement (module docstring) in this process; return its figures."""
    os.environ.update(DS_ACCELERATOR="cpu", RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(29500 + os.getpid() % 1000))
    import deepspeed
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from upft_ray.config import TrainConfig
    from upft_ray.training.checkpointing import load_training_state, save_training_state
    from upft_ray.training.loop import deepspeed_config
    from upft_ray.training.memory import plan_memory

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**SHAPES[shape])).to(torch.bfloat16 if precision == "bf16" else torch.float32)
    deepspeed.init_distributed(dist_backend="gloo")
    config = deepspeed_config(TrainConfig(zero_stage=stage, micro_batch_size=1, precision=precision), 1, precision,
                              plan_memory(stage, False, 1, bf16=precision == "bf16"))
    engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=config)
    ids, cpu = torch.randint(0, SHAPES[shape]["vocab_size"], (1, tokens)), torch.device("cpu")

    def steps(n: int) -> None:
        for _ in range(n):
            engine.backward(engine(input_ids=ids, labels=ids).loss)
            engine.step()

    out = {"params": model.num_parameters(), "engine_built_bytes": _anon_bytes()}
    if kind == "save":
        steps(1)
        save_training_state(engine, checkpoint, 0, cpu, {"step": 1, "consumed_examples": 1})
        return out
    if kind == "resume":
        started = time.time()
        with PeakAnon() as load:
            load_training_state(engine, checkpoint, 0, cpu)
        out.update(load_peak_bytes=load.peak, load_s=round(time.time() - started, 2), after_load_bytes=_anon_bytes())
    with PeakAnon() as train:
        steps(3)
    return {**out, "step_peak_bytes": train.peak}


def _run_child(*args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, env=env,
                          timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"{args[0]} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(shape: str, stage: int, precision: str, tokens: int) -> dict:
    """Return the figures of one shape, ZeRO stage and precision: save, fresh and resume, each in its own process."""
    work = Path(tempfile.mkdtemp(prefix="upft-resume-bench-"))
    try:
        args = (shape, str(stage), precision, str(tokens), str(work))
        params = _run_child("save", *args)["params"]
        checkpoint_bytes = sum(p.stat().st_size for p in work.rglob("*.pt"))
        fresh, resume = _run_child("fresh", *args), _run_child("resume", *args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"shape": shape, "zero_stage": stage, "precision": precision, "params": params, "tokens_per_step": tokens,
            "checkpoint_bytes": checkpoint_bytes, "fresh": fresh, "resume": resume,
            "load_peak_over_fresh_step_peak": round(resume["load_peak_bytes"] / fresh["step_peak_bytes"], 3),
            "load_extra_bytes_per_param": round((resume["load_peak_bytes"] - resume["engine_built_bytes"]) / params,
                                                1)}


def render(result: dict) -> str:
    """Return RESULTS' block for ``result``."""
    lines = [BEGIN, f"Command: `{result['command']}` ({result['date']}; {result['machine']}; malloc settings: "
             f"{result['malloc'] or 'none'}).", "",
             "| shape | params | ZeRO | precision | checkpoint | engine built | fresh: step peak | resume: load peak | "
             "load peak / step peak | load extra per param | resumed: step peak | load time |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        f, r = row["fresh"], row["resume"]
        lines.append(f"| {row['shape']} | {row['params']:,} | {row['zero_stage']} | {row['precision']}"
                     f" | {row['checkpoint_bytes'] / GIB:.2f} GiB"
                     f" | {r['engine_built_bytes'] / GIB:.2f} GiB | {f['step_peak_bytes'] / GIB:.2f} GiB"
                     f" | {r['load_peak_bytes'] / GIB:.2f} GiB | **{row['load_peak_over_fresh_step_peak']}**"
                     f" | {row['load_extra_bytes_per_param']} B | {r['step_peak_bytes'] / GIB:.2f} GiB"
                     f" | {r['load_s']} s |")
    return "\n".join([*lines, END])


def main() -> None:
    """Run the benchmark (module docstring); write the JSON and RESULTS' block."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="0.5b")
    parser.add_argument("--stages", default="0", help="ZeRO stages, comma-separated (0, 1 or 2)")
    parser.add_argument("--precisions", default="fp32,bf16", help="comma-separated: fp32, bf16")
    parser.add_argument("--tokens", type=int, default=512, help="tokens of the one-row micro-batch")
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, shape, stage, precision, tokens, work = args.child
        print(json.dumps(child(kind, shape, int(stage), precision, int(tokens), Path(work))))
        return
    rows = [measure(args.shape, int(stage), precision, args.tokens) for stage in args.stages.split(",")
            for precision in args.precisions.split(",")]
    flags = "".join(f" --{k} {v}" for k, v, d in (("shape", args.shape, "0.5b"), ("stages", args.stages, "0"),
                                                    ("precisions", args.precisions, "fp32,bf16"),
                                                    ("tokens", args.tokens, 512)) if v != d)
    malloc = " ".join(f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("MALLOC_"))
    result = {"command": f"{malloc + ' ' if malloc else ''}PYTHONPATH=$PWD python bench/resume_memory.py{flags}",
              "date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} CPUs", "malloc": malloc, "rows": rows}
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    replace_block(REPO / "bench" / "RESULTS.md", BEGIN, END, render(result))
    print(render(result))


if __name__ == "__main__":
    main()
