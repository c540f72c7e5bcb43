"""Trainer throughput vs a plain torch loop, and packing efficiency on UPFT prefix data (CPU).

Data: the quickstart's real sample stage (bundled SmolLM2-135M-Instruct on the 400 bundled questions, the
quickstart's t and p), tokenised by the trainer's own ``prepare_examples``. Model: a small random Llama with
SmolLM2's tokenizer (vocab 49,152, hidden 256, 4 layers), fp32, so that a run takes minutes on 2 cores.
The quickstart's train settings otherwise (loss normalisation, prefix EOS, padding multiple, ZeRO stage).

(a) ``upft train``: Ray Train, 2 workers x 1 CPU, DeepSpeed over gloo, packed rows
    (and, for comparison, unpacked rows).
(b) a plain single-process loop (2 torch threads): the same model, rows, collate, loss and global
    batch, torch.optim.AdamW, no Ray, no DeepSpeed.
Tokens/s counts real tokens (no padding) and is the median over the steady-state steps (the first
two steps of each run are dropped). Goal: (a) packed / (b) packed >= 0.85. Also packing efficiency
(real tokens / row capacity) at several row lengths. Figures go to bench/results/train_throughput.json
and the "train-throughput" block of bench/RESULTS.md (bench/trainer_lib.py).

    .venv/bin/python bench/train_throughput.py [--epochs 4] [--max-length 512] [--micro-batch-size 4]

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
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from checkpointing_lib import compare_checkpointing, step_peak  # noqa: E402
from loss_paths_lib import RESULTS, compare_loss_paths, loss_step_peak, results_block  # noqa: E402, F401
from trainer_lib import compare_trainer  # noqa: E402


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
    compare_trainer(args)

if __name__ == "__main__":
    main()
