"""Calibrate the multi-step word problems' difficulty for a model: greedy base accuracy per level.

For each candidate level (the number of times the count changes, ``upft_ray.io.multistep_data``) it
generates N fresh questions from a calibration seed (not the shipped sets' seeds), evaluates the base
model on all levels in one ``upft evaluate`` (greedy, configs/quickstart.yaml's engine; the model,
max_new_tokens and chat template given here), and records each level's accuracy with its Wilson 95%
interval and truncated answers, the level nearest 50%, the exact command and the wall time as one entry
of bench/results/multistep_calibration.json (an entry per setting; a rerun of a setting replaces it and
reuses its finished evaluation). The model is Qwen2.5-Coder-0.5B-Instruct dequantised from a Q4_K_M
GGUF (``upft models list``).

    .venv/bin/python bench/multistep_calibration.py [--levels 3 4 5] [--questions 80] [--max-new-tokens 256]
        [--chat-template model|qwen-math-upft] [--model NAME] [--run-dir DIR] [--allow-code-change]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import random
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from upft_ray.io.bundled_data import render_jsonl  # noqa: E402
from upft_ray.io.multistep_data import multistep_problem  # noqa: E402

OUT = REPO_ROOT / "bench" / "results" / "multistep_calibration.json"
log = logging.getLogger("upft.bench")


def candidate_sets(levels: list[int], count: int, seed: int, out_dir: Path) -> list[Path]:
    """Write ``count`` questions per level to ``out_dir/stepsL.jsonl``; return the files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for level in levels:
        rng = random.Random(seed * 100 + level)
        rows = []
        for i in range(count):
            question, answer = multistep_problem(rng, level)
            rows.append({"id": f"cal{level}-{i:03d}", "question": question, "answer": str(answer)})
        path, text = out_dir / f"steps{level}.jsonl", render_jsonl(rows)
        if not path.is_file() or path.read_text() != text:  # rewritten, the file would be another benchmark
            path.write_text(text)
        files.append(path)
    return files


def wilson(correct: int, n: int, z: float = 1.96) -> list[float]:
    """Return the Wilson score 95% interval of ``correct`` of ``n`` as [low, high]."""
    if n == 0:
        return [0.0, 1.0]
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(centre - half, 4), round(centre + half, 4)]


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=int, nargs="+", default=[3, 4, 5])
    parser.add_argument("--questions", type=int, default=80)
    parser.add_argument("--seed", type=int, default=4242)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--chat-template", default="model", help="eval.engine.chat_template (model, qwen-math-upft)")
    parser.add_argument("--run-dir", type=Path, default=None, help="default: /tmp/upft-multistep-calibration-TAG")
    parser.add_argument("--allow-code-change", action="store_true",
                        help="read a finished calibration written by other code (the tree changed since)")
    return parser.parse_args()


def calibrate(args: argparse.Namespace) -> dict:
    """Evaluate the base model on every candidate level; return the calibration entry (figures, command)."""
    settings = {"levels": args.levels, "questions_per_level": args.questions, "calibration_seed": args.seed,
                "max_new_tokens": args.max_new_tokens, "chat_template": args.chat_template}
    tag = f"{'-'.join(map(str, args.levels))}-n{args.questions}-tok{args.max_new_tokens}-{args.chat_template}"
    run_dir = args.run_dir or Path(f"/tmp/upft-multistep-calibration-{tag}")
    files = candidate_sets(args.levels, args.questions, args.seed, run_dir / "questions")
    command = [str(REPO_ROOT / ".venv" / "bin" / "upft"), *(["--allow-code-change"] if args.allow_code_change else []),
               "evaluate", "-c", "configs/quickstart.yaml",
               "--run-dir", str(run_dir / "run"), "--model", "base", f"model={args.model}",
               f"eval.benchmarks=[{', '.join(str(f) for f in files)}]", f"eval.max_new_tokens={args.max_new_tokens}"]
    if args.chat_template != "model":  # the default stays unset: it would otherwise enter the eval hash
        command.append(f"eval.engine.chat_template={args.chat_template}")
    started = time.time()
    subprocess.run(command, cwd=REPO_ROOT, check=True, timeout=3 * 3600)  # resumes: finished chunks are read
    metrics = json.loads((run_dir / "run" / "eval_base" / "metrics.json").read_text())["benchmarks"]
    levels = {}
    for level in args.levels:
        m = metrics[f"steps{level}"]
        levels[str(level)] = {"accuracy": m["accuracy"], "correct": m["correct"], "graded": m["graded"],
                              "wilson95": wilson(m["correct"], m["graded"]),
                              "mean_output_tokens": m["mean_output_tokens"], "answers_missing": m["answers_missing"],
                              "truncated": _truncated(run_dir / "run" / "eval_base" / f"steps{level}.parquet")}
    chosen = min(args.levels, key=lambda lv: (abs(levels[str(lv)]["accuracy"] - 0.5), lv))
    return {"settings": settings, "command": " ".join(command),
            "script": "python bench/multistep_calibration.py " + " ".join(sys.argv[1:]), "levels": levels,
            "chosen_level": chosen, "wall_s": round(time.time() - started, 1),
            "machine": platform.node(), "cpus": os.cpu_count(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _truncated(answers: Path) -> int:
    """Return how many answers stopped at max_new_tokens (finish_reason 'length')."""
    import pyarrow.parquet as pq

    return int(sum(reason == "length" for reason in pq.read_table(answers, columns=["finish_reason"])[0].to_pylist()))


def main() -> None:
    """Run one calibration and record it in the JSON (replacing an entry with the same settings)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    entry = calibrate(_arguments())
    old = json.loads(OUT.read_text()).get("runs", []) if OUT.is_file() else []
    runs = [run for run in old if run.get("settings") != entry["settings"]] + [entry]
    result = {"what": "greedy base accuracy of multi-step word problems per level (count changes per problem), "
                      "per calibration setting; each run's chosen level is the one nearest 0.5 (ties: the lower)",
              "model": "qwen2.5-coder-0.5b-instruct, dequantised from its bundled Q4_K_M GGUF (upft models list)",
              "runs": runs}
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(entry, indent=2))


if __name__ == "__main__":
    main()
