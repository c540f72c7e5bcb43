"""Peak memory of the HF export (``upft_ray.training.export``) on a ~1B-parameter ZeRO checkpoint, on CPU.

    PYTHONPATH=$PWD python bench/export_memory.py            # writes bench/results/export_memory.json

1. A child process builds a random ~1B Qwen2 model in bf16 from its config (hidden 2048, 20 layers,
   intermediate 5632, vocab 32000, tied embeddings; 1.01B parameters), wraps it with
   ``deepspeed.initialize`` (ZeRO-2 by default, bf16, gloo, world size 1) and saves a DeepSpeed
   checkpoint right away: the optimizer's fp32 master copy exists from initialisation, Adam's moments
   are not allocated before a step (they are not exported anyway).
2. For each export dtype, a fresh child process imports everything, notes its RSS (the baseline:
   Python + torch + transformers + deepspeed), runs ``export_hf_checkpoint`` and reports its peak RSS
   (``ru_maxrss``, which counts resident pages of the memory-mapped checkpoint too).
3. A last child loads the bf16 export with transformers and checks every tensor equals the fp32
   export rounded to bf16.
Figures go to ``bench/results/export_memory.json`` and the "export_memory" block of bench/RESULTS.md (``render``);
ratio = peak RSS / exported weight bytes. The checkpoint is deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]
from doc_blocks import markers, replace_block  # noqa: E402
from fresh_process import run_fresh  # noqa: E402

RESULTS = REPO / "bench" / "results" / "export_memory.json"
BEGIN, END = markers("export_memory", "bench/export_memory.py")
SHAPE = dict(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=20,
             num_attention_heads=16, num_key_value_heads=8, tie_word_embeddings=True, max_position_embeddings=2048)


def _rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmRSS:"))


def make_checkpoint(work: Path, stage: int) -> None:
    """Child: random model -> deepspeed.initialize -> save_checkpoint (no step)."""
    os.environ.update(DS_ACCELERATOR="cpu", RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT="29611")
    import deepspeed
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from upft_ray.config import TrainConfig
    from upft_ray.training.loop import deepspeed_config

    config = Qwen2Config(**SHAPE)
    config.save_pretrained(work / "model")
    torch.set_default_dtype(torch.bfloat16)
    model = Qwen2ForCausalLM(config)
    torch.set_default_dtype(torch.float32)
    cfg = TrainConfig(zero_stage=stage, micro_batch_size=1, precision="bf16")
    deepspeed.init_distributed(dist_backend="gloo")
    engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(),
                                      config=deepspeed_config(cfg, 1, "bf16"))
    engine.save_checkpoint(str(work / "checkpoint"), tag="step_00000000")
    print(json.dumps({"parameters": sum(p.ds_numel if hasattr(p, "ds_numel") else p.numel()
                                        for p in model.parameters())}))


def export(work: Path, dtype: str) -> None:
    """Child: baseline RSS after imports, then the export; prints its figures as JSON."""
    import deepspeed  # noqa: F401  (the export imports it for its checkpoint classes; count it in the baseline)
    import torch  # noqa: F401
    import transformers  # noqa: F401

    from upft_ray.training.export import export_hf_checkpoint

    baseline = _rss_bytes()
    started = time.time()
    out = export_hf_checkpoint(work / "checkpoint", str(work / "model"), work / f"export-{dtype}", dtype)
    seconds = time.time() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    weights = sum(p.stat().st_size for p in out.glob("*.safetensors"))
    print(json.dumps({"dtype": dtype, "baseline_rss_bytes": baseline, "peak_rss_bytes": peak,
                      "export_weight_bytes": weights, "ratio_peak_rss_to_weights": round(peak / weights, 3),
                      "ratio_peak_above_baseline_to_weights": round((peak - baseline) / weights, 3),
                      "shards": len(list(out.glob("*.safetensors"))), "seconds": round(seconds, 1)}))


def verify(work: Path) -> None:
    """Child: transformers loads the bf16 export; each tensor equals the fp32 export rounded to bf16."""
    import torch
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(work / "export-bfloat16")
    state = model.state_dict()
    checked, worst = 0, 0.0
    for shard in sorted((work / "export-float32").glob("*.safetensors")):
        with safe_open(str(shard), framework="pt") as fh:
            for name in fh.keys():
                ref = fh.get_tensor(name).to(torch.bfloat16)
                worst = max(worst, float((state[name].to(torch.bfloat16).float() - ref.float()).abs().max()))
                checked += 1
    print(json.dumps({"reloaded_with_transformers": True, "dtype_loaded": str(model.dtype),
                      "tensors_checked": checked, "max_abs_diff_bf16_vs_fp32_export_rounded": worst}))


def _child(*args: str) -> dict:
    """Run this script's ``--child`` part ``args`` in a fresh process (DeepSpeed on the CPU); return its JSON."""
    from upft_ray.runtime.cache import torch_extensions_dir

    return json.loads(run_fresh(__file__, *args, timeout=3600,
                                env={"DS_ACCELERATOR": "cpu", "TORCH_EXTENSIONS_DIR": str(torch_extensions_dir())}))


def main() -> None:
    """Run the benchmark (see module docstring) and write its JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--stage", type=int, default=2, choices=(1, 2, 3))
    parser.add_argument("--work", type=Path, help="scratch directory (default: a temp dir, deleted)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="the JSON; the RESULTS.md block only for the default")
    parser.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, work, *rest = args.child
        {"make": lambda: make_checkpoint(Path(work), int(rest[0])), "export": lambda: export(Path(work), rest[0]),
         "verify": lambda: verify(Path(work))}[kind]()
        return
    from upft_ray.runtime.hardware import machine_facts

    work = Path(args.work or tempfile.mkdtemp(prefix="upft-export-bench-"))
    try:
        made = _child("--child", "make", str(work), str(args.stage))
        checkpoint_bytes = sum(p.stat().st_size for p in (work / "checkpoint").rglob("*.pt"))
        runs = [_child("--child", "export", str(work), dtype) for dtype in ("bfloat16", "float32")]
        check = _child("--child", "verify", str(work))
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    machine = machine_facts()
    result = {"command": "PYTHONPATH=$PWD python bench/export_memory.py" + (f" --stage {args.stage}"
                                                                             if args.stage != 2 else ""),
              "date": time.strftime("%Y-%m-%d"), "cpu": f"{machine['cpu']} x{machine['cpu_count']}",
              "model_shape": SHAPE, "parameters": made["parameters"],
              "zero_stage": args.stage, "world_size": 1, "checkpoint_bytes": checkpoint_bytes,
              "exports": runs, "verify": check}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    if args.out == RESULTS:
        replace_block(REPO / "bench" / "RESULTS.md", BEGIN, END, render(result))
    print(render(result))


def render(result: dict) -> str:
    """Return RESULTS.md's export_memory block (markers included) from the recorded JSON."""
    shape, check = result["model_shape"], result["verify"]
    rows = [f"| {r['dtype']} | {r['export_weight_bytes']:,} | {r['baseline_rss_bytes']:,} | {r['peak_rss_bytes']:,} | "
            f"**{r['ratio_peak_rss_to_weights']:.3f}** | {r['ratio_peak_above_baseline_to_weights']:.3f} | "
            f"{r['seconds']:.1f} s |" for r in result["exports"]]
    return "\n".join([
        BEGIN, f"Command: `{result['command']}` ({result['date']}; {result.get('cpu', 'CPU not recorded')}). A random "
        f"Qwen2 of {result['parameters']:,} parameters (hidden {shape['hidden_size']}, {shape['num_hidden_layers']} "
        f"layers, intermediate {shape['intermediate_size']}, vocab {shape['vocab_size']}, tied embeddings), wrapped "
        f"by `deepspeed.initialize` (ZeRO-{result['zero_stage']}, bf16, gloo, world size {result['world_size']}) and "
        f"saved by DeepSpeed itself right away ({result['checkpoint_bytes']:,} bytes of `.pt` files: bf16 module + "
        "fp32 master partition).", "",
        "| export dtype | exported weight bytes | baseline RSS | peak RSS | peak / exported bytes "
        "| (peak - baseline) / exported bytes | time |", "|---|---|---|---|---|---|---|", *rows, "",
        f"A last process loads the bf16 export with transformers and finds all {check['tensors_checked']} tensors "
        f"equal to the fp32 export rounded to bf16 (max abs diff {check['max_abs_diff_bf16_vs_fp32_export_rounded']}).",
        END])


if __name__ == "__main__":
    main()
