"""Benchmark one DeepSpeed training step of our trainer (ZeRO 1/2/3, optional gradient checkpointing).

Reuses the real pieces of the trainer (``deepspeed_config``, ``lr_lambda``, the packing collate
``collate_rows``, ``forward_logits`` and ``summed_loss``) on a randomly initialised
Qwen2.5-0.5B-shaped model (no downloads) and random token sequences of three shapes: UPFT-like
examples one per row (prompt + short prefix response), the same examples packed into long rows
(position ids restart per example; block-diagonal attention), and full-solution length. Each
(ZeRO stage, gradient checkpointing) combination runs in its own process (world size 1) so that
engines never share GPU memory; each process times every shape.

GPU:  python3 bench/train_step_gpu.py                 (H100, bf16, NCCL)
CPU:  python bench/train_step_gpu.py --tiny           (2-layer model, fp32, gloo; checks it works)

Per shape: 3 warm-up steps (--warmup), then --steps timed steps, each bracketed by
torch.cuda.synchronize(). A step is what loop.py does per micro-batch with gradient accumulation 1:
forward (no KV cache), the summed token NLL / the step's loss tokens, engine.backward, engine.step,
loss.item().
Reported: median step time, tokens/s (all tokens, prompt + response), peak GPU memory
(torch.cuda.max_memory_allocated over the timed steps) and
MFU = tokens/s * (6 * N_params + 12 * n_layers * hidden * seq_len) / peak_flops
(the PaLM-appendix estimate; attention counted without the causal-mask halving over each example's own
length, not the packed row's, since packed examples do not attend to each other; gradient-checkpoint
recomputation not counted, so it is model FLOPs, not hardware FLOPs).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
H100_SXM_BF16_DENSE = 989e12

# (name, micro batch rows, prompt tokens, response tokens, packed row length or 0 for one example per row)
GPU_SHAPES = [("upft", 16, 200, 33, 0), ("upft-packed", 2, 200, 33, 4096), ("full", 8, 200, 824, 0)]
TINY_SHAPES = [("upft", 4, 24, 8, 0), ("upft-packed", 1, 24, 8, 128), ("full", 2, 24, 40, 0)]


def model_config(tiny: bool):
    from transformers import Qwen2Config

    if tiny:
        return Qwen2Config(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                           max_position_embeddings=512)
    # Qwen2.5-0.5B shape.
    return Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                       num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True,
                       max_position_embeddings=4096, rope_theta=1000000.0, rms_norm_eps=1e-6)


def parse_shapes(text: str | None, tiny: bool):
    if not text:
        return TINY_SHAPES if tiny else GPU_SHAPES
    shapes = []
    for item in text.split(","):  # name:micro:prompt:response[:pack]
        name, micro, prompt, resp, *pack = item.split(":")
        shapes.append((name, int(micro), int(prompt), int(resp), int(pack[0]) if pack else 0))
    return shapes


def worker(args) -> None:
    """One process: one engine (stage, checkpointing), all shapes; prints RESULT lines."""
    if args.tiny:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    for key, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(args.port)}.items():
        os.environ[key] = value
    sys.path.insert(0, str(REPO_ROOT))
    import numpy as np
    import torch
    import deepspeed
    from transformers import AutoModelForCausalLM

    from upft_ray.training.loop import deepspeed_config, lr_lambda
    from upft_ray.training.objective import forward_logits, global_normaliser, summed_loss
    from upft_ray.training.packing import ExampleStore, collate_rows

    cuda = torch.cuda.is_available() and not args.tiny
    deepspeed.init_distributed(dist_backend="nccl" if cuda else "gloo")
    torch.manual_seed(0)
    if cuda:
        torch.cuda.set_device(0)

    shapes = parse_shapes(args.shapes, args.tiny)
    precision = "fp32" if args.tiny else "bf16"
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    config = model_config(args.tiny)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    n_params = sum(p.numel() for p in model.parameters())
    if args.ckpt:
        model.gradient_checkpointing_enable()
    cfg = {"micro_batch_size": shapes[0][1], "gradient_accumulation_steps": 1, "zero_stage": args.stage,
           "precision": precision, "learning_rate": 1e-5, "weight_decay": 0.0, "offload_optimizer": False,
           "max_grad_norm": 1.0}
    engine, _, _, _ = deepspeed.initialize(
        model=model, model_parameters=model.parameters(), config=deepspeed_config(cfg, 1),
        lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda("constant", 10, 1000, 0.0)),
    )
    engine.train()
    rng = np.random.default_rng(0)
    pad_id = 0

    def sync():
        if cuda:
            torch.cuda.synchronize()

    for name, micro, prompt, resp, pack in shapes:
        seq = prompt + resp
        per_row = pack // seq if pack else 1
        n = micro * per_row
        store = ExampleStore(rng.integers(1, config.vocab_size, n * seq), np.arange(n + 1) * seq, np.full(n, prompt))
        rows = [list(range(r * per_row, (r + 1) * per_row)) for r in range(micro)]
        input_ids, position_ids, labels, example_ids = (t.to(engine.device) for t in collate_rows(rows, store, pad_id))
        normaliser = global_normaliser(rows, store, "token")
        tokens = n * seq
        row = {"stage": args.stage, "ckpt": bool(args.ckpt), "shape": name, "micro": micro, "seq": seq,
               "prompt": prompt, "response": resp, "pack": pack, "examples_per_row": per_row,
               "tokens_per_step": tokens, "n_params": n_params, "n_layers": config.num_hidden_layers,
               "hidden": config.hidden_size}
        try:
            times, losses, phases = [], [], {"fwd": [], "bwd": [], "step": []}
            for i in range(args.warmup + args.steps):
                if i == args.warmup and cuda:
                    torch.cuda.reset_peak_memory_stats()
                sync()
                t0 = time.perf_counter()
                loss = summed_loss(forward_logits(engine, input_ids, position_ids), labels, example_ids,
                                   "token") / normaliser
                if args.breakdown:  # extra syncs: per-phase times (fwd incl. loss; step incl. clipping)
                    sync()
                    t1 = time.perf_counter()
                engine.backward(loss)
                if args.breakdown:
                    sync()
                    t2 = time.perf_counter()
                engine.step()
                losses.append(loss.item())
                sync()
                if i >= args.warmup:
                    t3 = time.perf_counter()
                    times.append(t3 - t0)
                    if args.breakdown:
                        for key, dt in (("fwd", t1 - t0), ("bwd", t2 - t1), ("step", t3 - t2)):
                            phases[key].append(dt)
            if args.breakdown:
                row["breakdown_ms"] = {k: 1000 * statistics.median(v) for k, v in phases.items()}
            med = statistics.median(times)
            tok_s = tokens / med
            flops_per_token = 6 * n_params + 12 * config.num_hidden_layers * config.hidden_size * seq
            row.update({"ok": True, "median_s": med, "min_s": min(times), "max_s": max(times),
                        "steps": len(times), "tokens_per_s": tok_s,
                        "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
                        "mfu": tok_s * flops_per_token / args.peak_flops if cuda else None,
                        "loss_first": losses[0], "loss_last": losses[-1]})
        except torch.OutOfMemoryError as exc:  # report, keep going with the next shape
            row.update({"ok": False, "error": f"OOM: {str(exc).splitlines()[0]}"})
            if cuda:
                torch.cuda.empty_cache()
        print("RESULT " + json.dumps(row), flush=True)


def fmt(x, spec):
    return "n/a" if x is None else format(x, spec)


def table(rows) -> str:
    head = ("| ZeRO | grad ckpt | shape | micro x seq (prompt+resp) | median step (ms) | min-max (ms) "
            "| tokens/s | peak mem (GiB) | MFU |\n|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        shape = f"{r['micro']} x {r['seq']} ({r['prompt']}+{r['response']})"
        if r.get("pack"):
            shape = f"{r['micro']} rows x {r['examples_per_row']} examples of {r['seq']} ({r['prompt']}+{r['response']})"
        if not r.get("ok"):
            lines.append(f"| {r['stage']} | {'yes' if r['ckpt'] else 'no'} | {r['shape']} | {shape} "
                         f"| failed: {r.get('error', '?')} | | | | |")
            continue
        mfu = None if r["mfu"] is None else 100 * r["mfu"]
        lines.append(f"| {r['stage']} | {'yes' if r['ckpt'] else 'no'} | {r['shape']} | {shape} "
                     f"| {1000 * r['median_s']:.1f} | {1000 * r['min_s']:.1f}-{1000 * r['max_s']:.1f} "
                     f"| {r['tokens_per_s']:,.0f} | {fmt(r['peak_mem_gib'], '.1f')} "
                     f"| {fmt(mfu, '.1f')}{'' if mfu is None else '%'} |")
    return head + "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="2-layer fp32 model on CPU (gloo): checks it runs")
    ap.add_argument("--stages", default="1,2,3", help="ZeRO stages, comma separated")
    ap.add_argument("--ckpt", default="0", help="gradient checkpointing variants: 0, 1 or 0,1")
    ap.add_argument("--shapes", default=None, help="name:micro:prompt:response[:pack],... (default: "
                    "upft:16:200:33,upft-packed:2:200:33:4096,full:8:200:824; tiny: smaller)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up steps per shape (3; tiny 1)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per shape (15; tiny 2)")
    ap.add_argument("--breakdown", action="store_true", help="also time forward/backward/step apart")
    ap.add_argument("--peak-flops", type=float, default=H100_SXM_BF16_DENSE)
    ap.add_argument("--out", default=os.environ.get("OUT"), help="folder for results.json/results.md")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--stage", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=29500, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.warmup is None:
        args.warmup = 1 if args.tiny else 3
    if args.steps is None:
        args.steps = 2 if args.tiny else 15
    if args.worker:
        args.ckpt = int(args.ckpt)
        worker(args)
        return

    if args.tiny:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    rows, port = [], 29500
    for ckpt in [int(c) for c in args.ckpt.split(",")]:
        for stage in [int(s) for s in args.stages.split(",")]:
            cmd = [sys.executable, __file__, "--worker", "--stage", str(stage), "--ckpt", str(ckpt),
                   "--port", str(port), "--warmup", str(args.warmup), "--steps", str(args.steps),
                   "--peak-flops", str(args.peak_flops)]
            cmd += ["--tiny"] if args.tiny else []
            cmd += ["--breakdown"] if args.breakdown else []
            cmd += ["--shapes", args.shapes] if args.shapes else []
            port += 1
            print(f"== ZeRO-{stage} grad_ckpt={bool(ckpt)}", flush=True)
            t0 = time.time()
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            got = [json.loads(line[7:]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
            for r in got:
                print(f"   {r['shape']}: " + (f"{1000 * r['median_s']:.1f} ms/step, {r['tokens_per_s']:,.0f} tok/s, "
                      f"loss {r['loss_first']:.3f}->{r['loss_last']:.3f}"
                      + (f", fwd/bwd/step ms {r['breakdown_ms']}" if "breakdown_ms" in r else "")
                      if r.get("ok") else r["error"]), flush=True)
            if proc.returncode != 0 or not got:
                print(proc.stdout[-4000:], flush=True)
                got.append({"stage": stage, "ckpt": bool(ckpt), "shape": "all", "micro": 0, "seq": 0, "prompt": 0,
                            "response": 0, "ok": False, "error": f"worker exit code {proc.returncode}"})
            print(f"   ({time.time() - t0:.0f} s incl. start-up)", flush=True)
            rows += got

    import torch
    env = {"python": sys.version.split()[0], "torch": torch.__version__,
           "cuda": torch.version.cuda, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    try:
        import deepspeed
        import transformers
        env.update(deepspeed=deepspeed.__version__, transformers=transformers.__version__)
    except Exception as exc:  # noqa: BLE001
        env["import_error"] = repr(exc)
    n_params = next((r["n_params"] for r in rows if "n_params" in r), None)
    md = (f"versions: {json.dumps(env)}\nparams: {n_params}\npeak flops: {args.peak_flops:.3g}\n\n" + table(rows))
    print("\n" + md, flush=True)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        Path(args.out, "results.json").write_text(json.dumps({"env": env, "rows": rows}, indent=1))
        Path(args.out, "results.md").write_text(md)
    if any(not r.get("ok") for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
