"""Trainer throughput vs a plain torch loop, and packing efficiency on UPFT prefix data (CPU).

Data: the quickstart's real sample stage (bundled SmolLM2-135M-Instruct on the 400 bundled
questions: 90% prefix rows of t = 8 tokens, 10% full solutions), tokenised by the trainer's own
``prepare_examples``. Model: a small random Llama with SmolLM2's tokenizer (vocab 49,152, hidden
256, 4 layers), fp32, so that a run takes minutes on 2 cores.

(a) ``upft train``: Ray Train, 2 workers x 1 CPU, DeepSpeed ZeRO-2 over gloo, packed rows
    (and, for comparison, unpacked rows).
(b) a plain single-process loop (2 torch threads): the same model, rows, collate, loss and global
    batch, torch.optim.AdamW, no Ray, no DeepSpeed.
Tokens/s counts real tokens (no padding) and is the median over the steady-state steps (the first
two steps of each run are dropped). Goal: (a) packed / (b) packed >= 0.85; packing efficiency
(real tokens / row capacity) >= 0.95.

    .venv/bin/python bench/train_throughput.py [--epochs 4] [--max-length 512]

``--loss-paths``: only the loss paths of ``upft_ray.training.objective``, old (``reference``: logits for
every position over the whole vocabulary) against new (``chunked``: LM head and cross-entropy on loss
positions only, in chunks), in one run: a random Qwen2 with Qwen2.5's vocabulary (151,936) and a small
body, fp32, UPFT-shaped packed rows (the GPU check's example shape); train steps (forward, backward,
torch AdamW) of the two paths interleaved, and each path's loss step (forward + backward) once more in a
fresh process for its peak RSS. Figures go to bench/results/loss_paths.json and the "loss-paths" block of
bench/RESULTS.md.

    .venv/bin/python bench/train_throughput.py --loss-paths [--steps 6]

``--checkpointing``: the activation checkpointing modes (``train.gradient_checkpointing``: none, full,
selective) in one run, on a deeper, narrower random Qwen2 with a small vocabulary (activations are what a step
holds) and the same rows: forward + backward tokens/s, the modes taking turns, and each mode's step once more
in a fresh process for its peak RSS (bench/checkpointing_lib.py). Figures go to
bench/results/checkpointing.json and the "checkpointing" block of bench/RESULTS.md.

    .venv/bin/python bench/train_throughput.py --checkpointing [--steps 6]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from checkpointing_lib import compare_checkpointing, step_peak  # noqa: E402
from loss_paths_lib import RESULTS, compare_loss_paths, loss_step_peak, results_block  # noqa: E402, F401

from upft_ray.config import load_config  # noqa: E402


def make_model(out: Path) -> Path:
    """Save a small random Llama with the bundled model's tokenizer; return its directory."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from upft_ray.engine.models import prepare_bundled_model

    tokenizer = AutoTokenizer.from_pretrained(prepare_bundled_model("smollm2-135m-instruct"))
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def steady_tokens_per_s(rows: list[dict]) -> float:
    """Median tokens/s over the steps after the first two."""
    return statistics.median(r["tokens_per_s"] for r in rows[2:])


def trainer_run(cfg) -> dict:
    from upft_ray.orchestration import stages as pipeline

    manifest = pipeline.train(cfg)
    rows = [json.loads(line) for line in (cfg.run_path / "train" / "metrics.jsonl").read_text().splitlines()]
    return {"tokens_per_s": steady_tokens_per_s(rows), "steps": len(rows), "counts": manifest["counts"]}


def plain_loop(cfg, model_dir: Path, steps: int) -> dict:
    """The same global batches as the trainer's first epoch, in one process with torch AdamW."""
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    from upft_ray.training.examples import example_parts
    from upft_ray.training.loop import step_rows
    from upft_ray.training.objective import global_normaliser, micro_batch_loss
    from upft_ray.training.packing import ExampleStore, collate_rows, epoch_rows

    t = cfg.train
    torch.set_num_threads(2)
    torch.manual_seed(cfg.seed)
    store = ExampleStore.from_parts(example_parts(cfg.run_path / "train" / "examples"))
    rows = epoch_rows(store.lengths, cfg.seed, 0, t.max_length if t.packing else 0)
    rows_per_step = t.micro_batch_size * t.num_workers
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).train()
    pad_id = model.config.pad_token_id or 0
    optimizer = torch.optim.AdamW(model.parameters(), lr=t.learning_rate)
    rates = []
    for k in range(min(steps, len(rows) // rows_per_step)):
        started = time.time()
        rows_of_step = step_rows(rows, k, rows_per_step)
        normaliser = global_normaliser(rows_of_step, store, t.loss_normalization)
        tokens = 0
        for m in range(t.num_workers):  # the trainer's micro-batches, one after the other
            micro = rows_of_step[m * t.micro_batch_size:(m + 1) * t.micro_batch_size]
            batch = collate_rows(micro, store, pad_id)  # the trainer's default loss path:
            loss = micro_batch_loss(model, batch, t.loss_normalization, "cpu") / normaliser
            loss.backward()
            tokens += sum(int(store.lengths[np.asarray(r)].sum()) for r in micro)
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        rates.append({"tokens_per_s": tokens / (time.time() - started)})
    return {"tokens_per_s": steady_tokens_per_s(rates), "steps": len(rates)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--micro-batch-size", type=int, default=4)
    parser.add_argument("--loss-paths", action="store_true", help="only old vs new loss path (see above)")
    parser.add_argument("--steps", type=int, default=6, help="--loss-paths, --checkpointing: measured steps each")
    parser.add_argument("--checkpointing", action="store_true", help="only the checkpointing modes (see above)")
    parser.add_argument("--loss-step-probe", choices=("reference", "chunked"), help=argparse.SUPPRESS)
    parser.add_argument("--checkpointing-probe", choices=("none", "full", "selective"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.loss_step_probe:  # the fresh process that measures one loss step's peak RSS
        print("PROBE " + json.dumps(loss_step_peak(args.loss_step_probe)))
        return
    if args.checkpointing_probe:
        print("PROBE " + json.dumps(step_peak(args.checkpointing_probe)))
        return
    if args.loss_paths:
        return compare_loss_paths(args.steps)
    if args.checkpointing:
        return compare_checkpointing(args.steps)
    from upft_ray.orchestration import stages as pipeline
    from upft_ray.training.packing import epoch_rows, packing_efficiency

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = make_model(tmp / "model")
        sample_cfg = load_config(REPO_ROOT / "configs" / "quickstart.yaml", [f"run_dir={tmp / 'sampled'}",
                                 "sample.prefix_tokens=8"])  # RESULTS.md's figures: the quickstart's t then
        pipeline.sample(sample_cfg)

        def config(name: str, packing: bool):
            run = tmp / name
            run.mkdir()
            (run / "sample").symlink_to(tmp / "sampled" / "sample")
            return load_config(REPO_ROOT / "configs" / "quickstart.yaml", [
                f"run_dir={run}", f"model={model_dir}", "train.precision=fp32", f"train.epochs={args.epochs}",
                f"train.max_length={args.max_length}", f"train.micro_batch_size={args.micro_batch_size}",
                f"train.packing={str(packing).lower()}", "train.gradient_accumulation_steps=1",
                # the settings RESULTS.md's figures were measured with (the quickstart's then)
                "train.prefix_eos=loss", "train.loss_normalization=token"])

        packed_cfg, unpacked_cfg = config("packed", True), config("unpacked", False)
        packed = trainer_run(packed_cfg)
        print(f"[bench] trainer packed: {packed}", flush=True)
        plain = plain_loop(packed_cfg, model_dir, steps=packed["steps"])
        print(f"[bench] plain loop packed: {plain}", flush=True)
        unpacked = trainer_run(unpacked_cfg)
        print(f"[bench] trainer unpacked: {unpacked}", flush=True)

        from upft_ray.training.stage import example_lengths

        lengths = example_lengths(packed_cfg.run_path / "train" / "examples")
        efficiency = {n: packing_efficiency(epoch_rows(lengths, 42, 0, n), lengths, n) for n in (256, 512, 1024, 2048)}
        # 400 examples fill few rows, so the last, half-empty row weighs a lot: also pack 50,000
        # examples drawn from the same length distribution.
        import numpy as np

        many = np.random.default_rng(0).choice(lengths, size=50_000)
        efficiency_50k = {n: packing_efficiency(epoch_rows(many, 42, 0, n), many, n) for n in (256, 512, 1024, 2048, 4096)}
        c = packed["counts"]

    print(f"\nprefix data: {c['examples']} examples ({c['prefix_examples']} prefix, {c['full_examples']} full), "
          f"mean {lengths.mean():.1f} tokens (min {lengths.min()}, max {lengths.max()})")
    print("| run | real tokens/s (median, steady state) | steps |\n|---|---|---|")
    print(f"| upft train, 2 workers, ZeRO-2, packed | {packed['tokens_per_s']:,.0f} | {packed['steps']} |")
    print(f"| upft train, 2 workers, ZeRO-2, unpacked | {unpacked['tokens_per_s']:,.0f} | {unpacked['steps']} |")
    print(f"| plain torch loop, 1 process x 2 threads, packed | {plain['tokens_per_s']:,.0f} | {plain['steps']} |")
    print(f"ratio trainer packed / plain loop packed: {packed['tokens_per_s'] / plain['tokens_per_s']:.3f} (goal >= 0.85)")
    print(f"ratio trainer packed / trainer unpacked: {packed['tokens_per_s'] / unpacked['tokens_per_s']:.3f}")
    print("packing efficiency (real tokens / capacity): " +
          ", ".join(f"{n}: {e:.4f}" for n, e in efficiency.items()) + " (goal >= 0.95)")
    print("packing efficiency, 50,000 examples of the same length distribution: " +
          ", ".join(f"{n}: {e:.4f}" for n, e in efficiency_50k.items()))


if __name__ == "__main__":
    main()
