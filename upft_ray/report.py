"""RUN/report.md: base vs UPFT accuracy per benchmark and the token accounting, from stage files."""

from __future__ import annotations

import json
from pathlib import Path


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def build_report(run_dir: Path) -> str:
    """Return the Markdown report of the run in ``run_dir`` (stages that did not run are omitted)."""
    sample = _load(run_dir / "sample" / "manifest.json")
    train = _load(run_dir / "train" / "manifest.json")
    evals = {label: _load(run_dir / sub / "metrics.json") for label, sub in (("base", "eval_base"), ("UPFT", "eval"))}
    evals = {k: v for k, v in evals.items() if v}
    lines = [f"# UPFT run: {run_dir.name}", ""]
    if sample:
        lines += [f"Model: `{sample['model']}`, seed {sample['seed']}, prefix tokens t = "
                  f"{sample['config']['prefix_tokens']}, structure ratio p = {sample['config']['structure_ratio']}.", ""]
    if evals:
        names = sorted({b for m in evals.values() for b in m["benchmarks"]})
        lines += ["## Accuracy (greedy)", "", "| model | " + " | ".join(names) + " |",
                  "|---|" + "---|" * len(names)]
        for label, metrics in evals.items():
            cells = []
            for name in names:
                b = metrics["benchmarks"].get(name)
                cells.append(f"{100 * b['accuracy']:.1f} ({b['correct']}/{b['graded']})" if b else "-")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Tokens", "", "| what | value |", "|---|---|"]
    if sample:
        c, t = sample["counts"], sample["tokens"]
        lines += [f"| questions in / sampled rows / rejected | {c['rows_in']} / {c['rows_written']} / {c['rows_rejected']} |",
                  f"| prefix rows / full rows | {c['prefix_rows']} / {c['full_rows']} |",
                  f"| tokens sampled (generated) | {t['generated']} (prefix {t['generated_prefix']}, full {t['generated_full']}) |",
                  f"| prompt tokens sent to the sampler | {t['prompt']} |"]
    if train:
        c = train["counts"]
        lines += [f"| tokens tuned (loss-bearing, per epoch) | {c['tokens_tuned']} |",
                  f"| training examples / optimizer steps | {c['examples']} / {c['steps']} |"]
    lines += ["", "## Wall time (s)", "", "| stage | seconds |", "|---|---|"]
    for label, m in (("sample", sample), ("train", train), *((f"eval {k}", v) for k, v in evals.items())):
        if m:
            lines.append(f"| {label} | {m['wall_time_s']:.1f} |")
    return "\n".join(lines) + "\n"


def write_report(run_dir: Path) -> Path:
    """Write ``run_dir/report.md`` and return its path."""
    path = run_dir / "report.md"
    path.write_text(build_report(run_dir))
    return path
