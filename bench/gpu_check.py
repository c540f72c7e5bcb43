"""GPU check of the real training loop: torchrun + NCCL, ZeRO 1/2/3 in bf16, kill/resume, export, tokens/s, MFU.

Run through ``bench/gpu_check.sh`` (see there for the machine set-up). Per ZeRO stage, three launches
of ``torchrun -m upft_ray.training.harness_torch`` (the loop ``upft train`` runs under Ray Train):

1. *killed*: every rank SIGKILLs itself right after the checkpoint at step K is committed;
2. *resumed*: the same command again, resuming from that checkpoint, to the end, then the HF export;
3. *plain*: the same config in fresh directories, uninterrupted, then the HF export.

Checks: the killed run died after committing step K; the resumed run logged every step once and recorded
its resume in ``events.jsonl``; it consumed as many examples as the plain run; it matches the plain run
(``resume_matches_plain``, see :func:`resume_verdict`: equal exported fp32 master weights, max abs diff <=
``--tolerance`` (default 1e-5), where the two runs' losses agree exactly up to step K; where they do not
(GPU kernels with non-deterministic reductions, e.g. the sdpa backward), losses after the resume no further
apart than ``--noise-factor`` x their distance before it); transformers loads the export.
Data: a Qwen2.5-0.5B-shaped random model (``--tiny``: a 2-layer one on CPU, gloo, 2 processes)
and UPFT-shaped examples (prompt + t+1 prefix tokens, 10% full solutions) packed to ``max_length``.
Throughput: the plain run's median ``tokens_per_s`` (all ranks' real tokens; steps 1-2 and the step after
the checkpoint excluded); MFU = tokens/s x (6 N + 12 L h s) / (peak x GPUs), s = mean example length
(packed examples attend only to themselves), peak = 989e12 (H100/H200 dense bf16) or ``--peak-flops``.
Figures go to ``OUT/gpu_check.json`` (``gpu_check_tiny.json`` with ``--tiny``); exit status 1 if a check fails.
``--recheck DIR`` recomputes the verdicts from a device run's kept metrics (DIR/zeroN-{killed,plain}/metrics.jsonl
and DIR/*.json) into DIR/verdicts.json, without training.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from synthetic import QWEN25_05B, TINY_QWEN2, write_random_model, write_upft_examples  # noqa: E402

from upft_ray.training.harness_torch import torchrun_command  # noqa: E402


def _peak_flops(name: str) -> float | None:
    return 989e12 if ("H100" in name or "H200" in name) else None


def _launch(nproc: int, loop_json: Path, ckpt: Path, export: Path | None, kill_at: int, log: Path) -> dict:
    # kill_at > 0: the crash drill (bench/crash_drill.py) SIGKILLs every rank after that step's checkpoint
    drill = {"script": Path(__file__).parent / "crash_drill.py", "extra": ("--kill-at-step", str(kill_at))} \
        if kill_at else {}
    command = torchrun_command(loop_json, ckpt, export, nproc, **drill)
    started = time.time()
    with open(log, "w") as fh:
        rc = subprocess.run(command, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, timeout=3600).returncode
    if rc != 0 and kill_at == 0:  # an unexpected failure: show why in the output, not only in the log
        print(f"[gpu_check] {' '.join(command)} exited {rc}; last lines of {log}:", flush=True)
        print("\n".join(log.read_text(errors="replace").splitlines()[-40:]), flush=True)
    return {"returncode": rc, "seconds": round(time.time() - started, 1), "log": str(log)}


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def resume_verdict(resumed: list[dict], plain: list[dict], kill_at: int, weight_diff: float, tolerance: float,
                   noise_factor: float) -> dict:
    """Does the killed-and-resumed run match the uninterrupted one? Up to step ``kill_at`` both ran the same
    code from the same state, so their loss difference there is the device's own run-to-run noise. Where it is
    0 (deterministic kernels), the exported weights must agree within ``tolerance``; otherwise the losses after
    the resume must be no further apart than ``noise_factor`` x that noise (a wrong data order moves them by
    the spread of losses between batches, 0.01-0.05 on the H100 run, 10-100x the noise there). Optimizer
    state lost on resume may not show in losses at a small learning rate: the deterministic CPU check
    (``--tiny``, weights within 1e-5) is the one that catches it. Return the figures and ``ok``."""
    before = [abs(x["loss"] - y["loss"]) for x, y in zip(resumed, plain) if x["step"] <= kill_at]
    after = [abs(x["loss"] - y["loss"]) for x, y in zip(resumed, plain) if x["step"] > kill_at]
    noise = max(before, default=float("nan"))
    deterministic = noise == 0.0
    ok = (weight_diff <= tolerance) if deterministic else bool(after) and max(after) <= noise_factor * noise
    return {"loss_diff_before_kill": noise, "loss_diff_after_resume": max(after, default=float("nan")),
            "deterministic": deterministic,
            "criterion": f"max abs weight diff <= {tolerance}" if deterministic
            else f"loss diff after resume <= {noise_factor} x loss diff before kill", "ok": ok}


def recheck(directory: Path, noise_factor: float) -> dict:
    """Recompute each stage's resume verdict from a device run's kept metrics; write DIR/verdicts.json."""
    verdicts = {}
    for result_file in sorted(directory.glob("gpu_check*.json")):
        result = json.loads(result_file.read_text())
        for stage, figures in result["stages"].items():
            resumed = _rows(directory / f"{stage}-killed" / "metrics.jsonl")
            plain = _rows(directory / f"{stage}-plain" / "metrics.jsonl")
            diff = figures["max_abs_diff_resumed_vs_plain"]
            verdicts[stage] = {"from": result_file.name, "max_abs_diff_resumed_vs_plain": diff,
                               **resume_verdict(resumed, plain, result["kill_at_step"], diff, result["tolerance"],
                                                noise_factor)}
    (directory / "verdicts.json").write_text(json.dumps(verdicts, indent=2) + "\n")
    return verdicts


def check_stage(stage: int, args, work: Path, model_dir: Path, examples: Path, shape: dict) -> dict:
    """Run killed / resumed / plain for one ZeRO stage; return its figures and verdicts."""
    import torch
    from safetensors.torch import load_file

    from upft_ray.config import TrainConfig
    from upft_ray.training.loop import LoopConfig

    train = (TrainConfig(
        num_workers=args.nproc, use_gpu=not args.tiny, zero_stage=stage, precision="fp32" if args.tiny else "bf16",
        micro_batch_size=args.micro, max_length=args.max_length, packing=True, learning_rate=args.lr,
        warmup_ratio=0.0, checkpoint_every_steps=args.kill_at, keep_last_k=1, export_dtype="float32"))
    out = {}
    runs = {}
    for name in ("killed", "plain"):  # "resumed" reuses the killed run's directories
        d = work / f"zero{stage}-{name}"
        d.mkdir(parents=True)
        loop = LoopConfig(train=train, seed=0, model_path=str(model_dir), examples_dir=str(examples),
                          metrics_path=str(d / "metrics.jsonl"), events_path=str(d / "events.jsonl"),
                          tensorboard_dir=None, pad_token_id=0)
        (d / "loop.json").write_text(loop.model_dump_json())
        runs[name] = d
    k, p = runs["killed"], runs["plain"]
    out["killed"] = _launch(args.nproc, k / "loop.json", k / "ckpt", None, args.kill_at, k / "killed.log")
    marker = k / "ckpt" / "latest.json"
    committed = json.loads(marker.read_text())["dir"] if marker.is_file() else None
    out["resumed"] = _launch(args.nproc, k / "loop.json", k / "ckpt", k / "export", 0, k / "resumed.log")
    out["plain"] = _launch(args.nproc, p / "loop.json", p / "ckpt", p / "export", 0, p / "plain.log")

    resumed, plain = _rows(k / "metrics.jsonl"), _rows(p / "metrics.jsonl")
    events = _rows(k / "events.jsonl")
    steps = len(plain)
    checks = {
        "killed_after_checkpoint": out["killed"]["returncode"] != 0 and committed == f"step_{args.kill_at:08d}",
        "runs_finished": out["resumed"]["returncode"] == 0 and out["plain"]["returncode"] == 0,
        "resumed_event": [e["step"] for e in events if e["event"] == "resumed"] == [args.kill_at],
        "each_step_logged_once": steps > args.kill_at and [r["step"] for r in resumed] == list(range(1, steps + 1)),
        "same_examples_consumed": bool(plain) and bool(resumed)
        and resumed[-1]["consumed_examples"] == plain[-1]["consumed_examples"],
    }
    if checks["runs_finished"]:
        a, b = load_file(str(k / "export" / "model.safetensors")), load_file(str(p / "export" / "model.safetensors"))
        diff = max(float((a[n].float() - b[n].float()).abs().max()) for n in a)
        out["max_abs_diff_resumed_vs_plain"] = diff
        out["resume"] = resume_verdict(resumed, plain, args.kill_at, diff, args.tolerance, args.noise_factor)
        checks["resume_matches_plain"] = set(a) == set(b) and out["resume"]["ok"]
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(p / "export")
        n_params = sum(t.numel() for t in model.parameters())
        checks["export_reloads"] = all(torch.equal(model.state_dict()[n], b[n]) for n in b)
        out["parameters"] = n_params
        timed = [r["tokens_per_s"] for r in plain if r["step"] > 2 and r["step"] != args.kill_at + 1]
        if timed:
            tps = statistics.median(timed)
            out["tokens_per_s"] = round(tps, 1)
            mean_len = args.mean_example_tokens
            flops_per_token = 6 * n_params + 12 * shape["num_hidden_layers"] * shape["hidden_size"] * mean_len
            peak = args.peak_flops or (None if args.tiny else _peak_flops(args.device_name))
            out["mfu"] = round(tps * flops_per_token / (peak * args.nproc), 4) if peak else None
    out["steps"] = steps
    out["checks"] = checks
    out["ok"] = all(checks.values()) and len(checks) == 7
    return out


def main() -> int:
    """Run the check (see module docstring); return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="CPU, gloo, 2 processes, a 2-layer model")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or REPO / "bench"))
    parser.add_argument("--stages", default=None, help="ZeRO stages (default 1,2,3; --tiny: 2)")
    parser.add_argument("--nproc", type=int, default=None, help="processes (default: GPUs; --tiny: 2)")
    parser.add_argument("--kill-at", type=int, default=None, help="checkpoint/kill step (default 6; --tiny 2)")
    parser.add_argument("--tolerance", type=float, default=1e-5, help="weights, on a deterministic device")
    parser.add_argument("--noise-factor", type=float, default=4.0, help="losses, on a non-deterministic device")
    parser.add_argument("--recheck", type=Path, default=None, help="recompute verdicts from a kept device run")
    parser.add_argument("--peak-flops", type=float, default=None, help="per-GPU peak for MFU (default by name)")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    if args.recheck:
        verdicts = recheck(args.recheck, args.noise_factor)
        print(json.dumps(verdicts, indent=1))
        return 0 if verdicts and all(v["ok"] for v in verdicts.values()) else 1
    import torch

    if args.tiny:
        args.nproc, shape = args.nproc or 2, TINY_QWEN2
        args.stages, args.kill_at = args.stages or "2", args.kill_at or 2
        args.micro, args.max_length, args.lr, n = 2, 128, 1e-3, 2 * 2 * 5 * 6
        prompt, prefix, full = 12, 8, 40
        args.device_name = "cpu"
    else:
        if not torch.cuda.is_available():
            print("no CUDA device: run with --tiny for the CPU check")
            return 1
        args.nproc, shape = args.nproc or torch.cuda.device_count(), QWEN25_05B
        args.stages, args.kill_at = args.stages or "1,2,3", args.kill_at or 6
        args.micro, args.max_length, args.lr = 2, 4096, 1e-5
        prompt, prefix, full = 200, 32, 800
        n = args.nproc * args.micro * 17 * 2 * args.kill_at + 64  # ~17 packed examples per row: ~2K steps
        args.device_name = torch.cuda.get_device_name(0)
    args.mean_example_tokens = prompt + 0.9 * (prefix + 1) + 0.1 * full
    work = Path(args.work or tempfile.mkdtemp(prefix="upft-gpu-check-"))
    started = time.time()
    model_dir = write_random_model(work / "model", shape, dtype="float32" if args.tiny else "bfloat16")
    examples = write_upft_examples(work / "examples", n, shape["vocab_size"], prompt, prefix, full)
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "device": args.device_name,
              "gpus": 0 if args.tiny else args.nproc, "processes": args.nproc, "torch": torch.__version__,
              "model_shape": shape, "examples": n, "example_shape": {"prompt": prompt, "prefix_response": prefix + 1,
                                                                     "full_response": full, "full_share": 0.1},
              "max_length": args.max_length, "micro_batch_rows": args.micro, "kill_at_step": args.kill_at,
              "tolerance": args.tolerance, "noise_factor": args.noise_factor, "stages": {}}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / ("gpu_check_tiny.json" if args.tiny else "gpu_check.json")
    stages = [int(s) for s in args.stages.split(",")]
    for stage in stages:
        result["stages"][f"zero{stage}"] = check_stage(stage, args, work, model_dir, examples, shape)
        print(json.dumps({f"zero{stage}": result["stages"][f"zero{stage}"]}, indent=1), flush=True)
        result["seconds"] = round(time.time() - started, 1)
        result["ok"] = len(result["stages"]) == len(stages) and all(s["ok"] for s in result["stages"].values())
        path.write_text(json.dumps(result, indent=2) + "\n")  # after each stage: a timeout keeps what finished
    print(f"[gpu_check] {'OK' if result['ok'] else 'FAILED'} in {result['seconds']}s; figures in {path}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
