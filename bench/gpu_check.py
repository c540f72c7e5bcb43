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
Data: a random model of Qwen2.5-0.5B's shape (``--shape 1.5b``: Qwen2.5-1.5B's; ``--tiny``: a 2-layer one on
CPU, gloo, 2 processes), built from its config on the machine (no download), and UPFT-shaped examples (prompt
+ t+1 prefix tokens, 10% full solutions) packed to ``max_length``.
Throughput (``gpu_check_lib.py``): the plain run's median ``tokens_per_s`` (all ranks' real tokens; steps 1-2
and the step after the checkpoint excluded), MFU = tokens/s x FLOPs per token / (peak x GPUs) with FLOPs per
token = 6 (N - E) + 6 H V f + 12 L H s_eff (``bench/flops.py``: the LM head on the tokens it runs on, attention
at the examples' own lengths, s_eff = sum(s_i^2) / sum(s_i)), and ``mfu_classic_6n`` (6N + the same attention);
peak = 989e12 (H100/H200 dense bf16) or ``--peak-flops``; the peak GPU memory the loop logged; the attention
and loss path the loop ran with.
``--throughput-only``: only the plain run of each stage (no kill, resume or export): for more settings per
10-minute call. The loop's settings: ``--offload`` (ZeRO-Offload, DeepSpeed's CPU Adam: a JIT-built op),
``--gradient-checkpointing``, ``--no-packing`` (the paper configs' settings), ``--pad-to-multiple-of``, and, to
measure the old paths beside the new, ``--loss-path reference`` and ``--attention sdpa`` (env ``UPFT_LOSS_PATH``,
``UPFT_ATTENTION``).
Figures go to ``OUT/gpu_check[-TAG].json`` (``gpu_check_tiny.json`` with ``--tiny``); exit status 1 if a check
fails. ``--recheck DIR`` recomputes the verdicts from a device run's kept metrics
(DIR/zeroN-{killed,plain}/metrics.jsonl and DIR/*.json) into DIR/verdicts.json, without training.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gpu_check_lib import MFU_FORMULA, SHAPES, peak_flops, throughput_figures  # noqa: E402
from synthetic import write_random_model, write_upft_examples  # noqa: E402

from upft_ray.config import TrainConfig  # noqa: E402
from upft_ray.training.harness_torch import torchrun_command  # noqa: E402


def _launch(nproc: int, loop_json: Path, ckpt: Path, export: Path | None, kill_at: int, log: Path,
            env: dict | None = None) -> dict:
    # kill_at > 0: the crash drill (bench/crash_drill.py) SIGKILLs every rank after that step's checkpoint
    drill = {"script": Path(__file__).parent / "crash_drill.py", "extra": ("--kill-at-step", str(kill_at))} \
        if kill_at else {}
    command = torchrun_command(loop_json, ckpt, export, nproc, **drill)
    started = time.time()
    with open(log, "w") as fh:
        rc = subprocess.run(command, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, timeout=3600,
                            env={**os.environ, **(env or {})}).returncode
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
            if "max_abs_diff_resumed_vs_plain" not in figures:  # a --throughput-only run: nothing to recheck
                continue
            resumed = _rows(directory / f"{stage}-killed" / "metrics.jsonl")
            plain = _rows(directory / f"{stage}-plain" / "metrics.jsonl")
            diff = figures["max_abs_diff_resumed_vs_plain"]
            verdicts[stage] = {"from": result_file.name, "max_abs_diff_resumed_vs_plain": diff,
                               **resume_verdict(resumed, plain, result["kill_at_step"], diff, result["tolerance"],
                                                noise_factor)}
    (directory / "verdicts.json").write_text(json.dumps(verdicts, indent=2) + "\n")
    return verdicts


def checkpointing(flag: str | None) -> bool | str:
    """Return train.gradient_checkpointing for ``--gradient-checkpointing [full|selective]``."""
    return {None: False, "full": True}.get(flag, flag)


def _loop_configs(stage: int, args, work: Path, model_dir: Path, examples: Path, names) -> dict:
    """Write a loop config per run name (directories under ``work``) for ZeRO ``stage``; return their dirs."""
    from upft_ray.training.loop import LoopConfig

    train = (TrainConfig(
        num_workers=args.nproc, use_gpu=not args.tiny, zero_stage=stage, precision="fp32" if args.tiny else "bf16",
        micro_batch_size=args.micro, max_length=args.max_length, packing=not args.no_packing, learning_rate=args.lr,
        warmup_ratio=0.0, checkpoint_every_steps=args.kill_at, keep_last_k=1, export_dtype="float32",
        offload_optimizer=args.offload, gradient_checkpointing=checkpointing(args.gradient_checkpointing),
        pad_to_multiple_of=args.pad_to_multiple_of))
    runs = {}
    for name in names:
        d = work / f"zero{stage}-{name}"
        d.mkdir(parents=True)
        loop = LoopConfig(train=train, seed=0, model_path=str(model_dir), examples_dir=str(examples),
                          metrics_path=str(d / "metrics.jsonl"), events_path=str(d / "events.jsonl"),
                          tensorboard_dir=None, pad_token_id=0)
        (d / "loop.json").write_text(loop.model_dump_json())
        runs[name] = d
    return runs


def _weights(export: Path) -> dict:
    from safetensors.torch import load_file

    return {k: v for shard in sorted(export.glob("*.safetensors")) for k, v in load_file(str(shard)).items()}


def _throughput(args, rows: list[dict], log: Path, skip: set[int]) -> dict:
    peak = args.peak_flops or (None if args.tiny else peak_flops(args.device_name))
    return throughput_figures(rows, skip, args.shape, args.lengths, args.loss_tokens, log, peak, args.nproc)


def throughput_stage(stage: int, args, work: Path, model_dir: Path, examples: Path) -> dict:
    """Run the plain run of one ZeRO stage only (no kill, resume or export); return its throughput figures."""
    p = _loop_configs(stage, args, work, model_dir, examples, ("plain",))["plain"]
    out = {"plain": _launch(args.nproc, p / "loop.json", p / "ckpt", None, 0, p / "plain.log", args.env)}
    plain = _rows(p / "metrics.jsonl")
    out["steps"] = len(plain)
    out.update(_throughput(args, plain, p / "plain.log", {args.kill_at + 1}))
    logged = [r["step"] for r in plain]
    out["checks"] = {"run_finished": out["plain"]["returncode"] == 0,
                     "each_step_logged_once": bool(plain) and logged == list(range(1, len(plain) + 1))}
    out["ok"] = all(out["checks"].values())
    return out


def check_stage(stage: int, args, work: Path, model_dir: Path, examples: Path) -> dict:
    """Run killed / resumed / plain for one ZeRO stage; return its figures and verdicts."""
    import torch

    runs = _loop_configs(stage, args, work, model_dir, examples, ("killed", "plain"))  # "resumed": the killed dirs
    k, p, out = runs["killed"], runs["plain"], {}
    out["killed"] = _launch(args.nproc, k / "loop.json", k / "ckpt", None, args.kill_at, k / "killed.log", args.env)
    marker = k / "ckpt" / "latest.json"
    committed = json.loads(marker.read_text())["dir"] if marker.is_file() else None
    out["resumed"] = _launch(args.nproc, k / "loop.json", k / "ckpt", k / "export", 0, k / "resumed.log", args.env)
    out["plain"] = _launch(args.nproc, p / "loop.json", p / "ckpt", p / "export", 0, p / "plain.log", args.env)

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
        a, b = _weights(k / "export"), _weights(p / "export")
        diff = max(float((a[n].float() - b[n].float()).abs().max()) for n in a)
        out["max_abs_diff_resumed_vs_plain"] = diff
        out["resume"] = resume_verdict(resumed, plain, args.kill_at, diff, args.tolerance, args.noise_factor)
        checks["resume_matches_plain"] = set(a) == set(b) and out["resume"]["ok"]
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(p / "export")
        checks["export_reloads"] = all(torch.equal(model.state_dict()[n], b[n]) for n in b)
        out["parameters"] = sum(t.numel() for t in model.parameters())
        out.update(_throughput(args, plain, p / "plain.log", {args.kill_at + 1}))
    out["steps"] = steps
    out["checks"] = checks
    out["ok"] = all(checks.values()) and len(checks) == 7
    return out


def _parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="CPU, gloo, 2 processes, a 2-layer model")
    parser.add_argument("--shape", choices=("0.5b", "1.5b"), default="0.5b", help="the random model's shape (GPU)")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or REPO / "bench"))
    parser.add_argument("--tag", default=None, help="figures go to gpu_check-TAG.json")
    parser.add_argument("--stages", default=None, help="ZeRO stages (default 1,2,3; --tiny: 2)")
    parser.add_argument("--nproc", type=int, default=None, help="processes (default: GPUs; --tiny: 2)")
    parser.add_argument("--kill-at", type=int, default=None, help="checkpoint/kill step (default 6; --tiny 2)")
    parser.add_argument("--throughput-only", action="store_true", help="only the plain run of each stage")
    parser.add_argument("--offload", action="store_true", help="train.offload_optimizer (ZeRO-Offload)")
    parser.add_argument("--gradient-checkpointing", nargs="?", const="full", choices=("full", "selective"),
                        default=None, help="train.gradient_checkpointing: true (full, the default) or selective")
    parser.add_argument("--no-packing", action="store_true", help="one example per row (train.packing false)")
    parser.add_argument("--pad-to-multiple-of", type=int,
                        default=TrainConfig.model_fields["pad_to_multiple_of"].default,
                        help="train.pad_to_multiple_of (default %(default)s); unpacked rows pay up to N - 1 tokens")
    parser.add_argument("--loss-path", choices=("chunked", "reference"), default="chunked", help="UPFT_LOSS_PATH")
    parser.add_argument("--attention", choices=("auto", "sdpa"), default="auto", help="UPFT_ATTENTION")
    parser.add_argument("--tolerance", type=float, default=1e-5, help="weights, on a deterministic device")
    parser.add_argument("--noise-factor", type=float, default=4.0, help="losses, on a non-deterministic device")
    parser.add_argument("--recheck", type=Path, default=None, help="recompute verdicts from a kept device run")
    parser.add_argument("--peak-flops", type=float, default=None, help="per-GPU peak for MFU (default by name)")
    parser.add_argument("--work", type=Path, default=None)
    return parser.parse_args()


def _settle(args) -> int | None:
    """Fill in the run's defaults (shape, data, stages) on ``args``; return an exit status when it cannot run."""
    import torch

    if args.tiny:
        args.nproc, args.shape = args.nproc or 2, SHAPES["tiny"]
        args.stages, args.kill_at = args.stages or "2", args.kill_at or 2
        args.micro, args.max_length, args.lr, args.examples = 2, 128, 1e-3, 2 * 2 * 5 * 6
        args.prompt, args.prefix, args.full = 12, 8, 40
        args.device_name = "cpu"
        return None
    if not torch.cuda.is_available():
        print("no CUDA device: run with --tiny for the CPU check")
        return 1
    args.nproc, args.shape_name = args.nproc or torch.cuda.device_count(), args.shape
    args.shape = SHAPES[args.shape]
    args.stages, args.kill_at = args.stages or "1,2,3", args.kill_at or 6
    args.micro, args.max_length, args.lr = 2, 4096, 1e-5
    args.prompt, args.prefix, args.full = 200, 32, 800
    args.examples = args.nproc * args.micro * 17 * 2 * args.kill_at + 64  # ~17 packed examples per row: ~2K steps
    args.device_name = torch.cuda.get_device_name(0)
    return None


def main() -> int:
    """Run the check (see module docstring); return the exit status."""
    args = _parse_args()
    if args.recheck:
        verdicts = recheck(args.recheck, args.noise_factor)
        print(json.dumps(verdicts, indent=1))
        return 0 if verdicts and all(v["ok"] for v in verdicts.values()) else 1
    if (status := _settle(args)) is not None:
        return status
    import torch

    from upft_ray.training.examples import example_parts
    from upft_ray.training.packing import ExampleStore

    args.env = {"UPFT_LOSS_PATH": args.loss_path, "UPFT_ATTENTION": args.attention}
    work = Path(args.work or tempfile.mkdtemp(prefix="upft-gpu-check-"))
    started = time.time()
    model_dir = write_random_model(work / "model", args.shape, dtype="float32" if args.tiny else "bfloat16")
    examples = write_upft_examples(work / "examples", args.examples, args.shape["vocab_size"], args.prompt,
                                   args.prefix, args.full)
    store = ExampleStore.from_parts(example_parts(examples))
    args.lengths, args.loss_tokens = store.lengths, store.loss_tokens
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "device": args.device_name,
              "gpus": 0 if args.tiny else args.nproc, "processes": args.nproc, "torch": torch.__version__,
              "model_shape": args.shape, "shape_name": "tiny" if args.tiny else args.shape_name,
              "examples": args.examples,
              "example_shape": {"prompt": args.prompt, "prefix_response": args.prefix + 1,
                                "full_response": args.full, "full_share": 0.1},
              "max_length": args.max_length, "micro_batch_rows": args.micro, "kill_at_step": args.kill_at,
              "settings": {"packing": not args.no_packing, "offload_optimizer": args.offload,
                           "pad_to_multiple_of": args.pad_to_multiple_of,
                           "gradient_checkpointing": checkpointing(args.gradient_checkpointing),
                           "loss_path": args.loss_path,
                           "attention": args.attention, "throughput_only": args.throughput_only},
              "mfu_formula": MFU_FORMULA, "tolerance": args.tolerance, "noise_factor": args.noise_factor,
              "stages": {}}
    args.out.mkdir(parents=True, exist_ok=True)
    name = "gpu_check_tiny" if args.tiny else "gpu_check" + (f"-{args.tag}" if args.tag else "")
    path = args.out / f"{name}.json"
    stages = [int(s) for s in args.stages.split(",")]
    run_stage = throughput_stage if args.throughput_only else check_stage
    for stage in stages:
        result["stages"][f"zero{stage}"] = run_stage(stage, args, work, model_dir, examples)
        print(json.dumps({f"zero{stage}": result["stages"][f"zero{stage}"]}, indent=1), flush=True)
        result["seconds"] = round(time.time() - started, 1)
        result["ok"] = len(result["stages"]) == len(stages) and all(s["ok"] for s in result["stages"].values())
        path.write_text(json.dumps(result, indent=2) + "\n")  # after each stage: a timeout keeps what finished
    print(f"[gpu_check] {'OK' if result['ok'] else 'FAILED'} in {result['seconds']}s; figures in {path}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
