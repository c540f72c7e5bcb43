"""RUN/report.md: base vs UPFT accuracy per benchmark and the token accounting, from stage files."""

from __future__ import annotations

import json
from pathlib import Path

from upft_ray.efficiency import METHOD_LABELS, efficiency_table


EVAL_DIRS = (("base", "eval_base"), ("UPFT", "eval"))


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def accuracy_rows(run_dirs: list[Path]) -> list[dict]:
    """Return one row per evaluated model in ``run_dirs``: run, model label, accuracy per benchmark
    (percent), tokens sampled and tuned (from the sample/train manifests, where they exist)."""
    rows = []
    for run_dir in run_dirs:
        sample = _load(run_dir / "sample" / "manifest.json") or {}
        train = _load(run_dir / "train" / "manifest.json") or {}
        for label, sub in EVAL_DIRS:
            metrics = _load(run_dir / sub / "metrics.json")
            if not metrics:
                continue
            tuned = sampled = None
            if label != "base":  # the trained model, named by its method (UPFT, SFT, RFT, ...)
                sampled = sample.get("tokens", {}).get("generated")
                tuned = train.get("counts", {}).get("tokens_tuned")
                label = METHOD_LABELS.get(sample.get("config", {}).get("method", "upft"), label)
            rows.append({"run": run_dir.name, "model": label, "sampled": sampled, "tuned": tuned,
                         "accuracy": {b: 100 * m["accuracy"] for b, m in metrics["benchmarks"].items()}})
    return rows


def comparison_table(rows: list[dict]) -> str:
    """Return the Markdown table of ``accuracy_rows`` (the paper's Table 1 layout, plus tokens)."""
    names = sorted({b for r in rows for b in r["accuracy"]})
    lines = ["| run | model | " + " | ".join(names) + " | avg | tokens sampled | tokens tuned |",
             "|---|---|" + "---|" * (len(names) + 3)]
    for r in rows:
        accs = [r["accuracy"].get(n) for n in names]
        present = [a for a in accs if a is not None]
        cells = [f"{a:.1f}" if a is not None else "-" for a in accs]
        avg = f"{sum(present) / len(present):.1f}" if present else "-"
        tokens = [f"{v:,}" if v is not None else "-" for v in (r["sampled"], r["tuned"])]
        lines.append(f"| {r['run']} | {r['model']} | " + " | ".join(cells) + f" | {avg} | " + " | ".join(tokens) + " |")
    return "\n".join(lines) + "\n"


def plot_accuracy(rows: list[dict], path: Path) -> Path:
    """Write a grouped bar chart (benchmarks x models) of ``accuracy_rows`` to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({b for r in rows for b in r["accuracy"]})
    width = 0.8 / max(1, len(rows))
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(names) + 2), 3.6))
    for i, r in enumerate(rows):
        xs = [j + i * width for j in range(len(names))]
        ax.bar(xs, [r["accuracy"].get(n, 0.0) for n in names], width, label=f"{r['run']} / {r['model']}")
    ax.set_xticks([j + width * (len(rows) - 1) / 2 for j in range(len(names))], names)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_comparison(run_dirs: list[Path], out_dir: Path) -> tuple[Path, Path]:
    """Write ``comparison.md`` and ``comparison.png`` for several runs into ``out_dir``; return both.

    Raises ValueError when none of the runs has an evaluation."""
    rows = accuracy_rows(run_dirs)
    if not rows:
        raise ValueError(f"no eval/metrics.json or eval_base/metrics.json in {[str(d) for d in run_dirs]}")
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / "comparison.md"
    efficiency = efficiency_table(run_dirs)
    md.write_text("# UPFT comparison\n\nAccuracy in %; tokens from the runs' manifests.\n\n" + comparison_table(rows)
                  + (f"\n## Token efficiency\n\n{efficiency}" if efficiency else ""))
    return md, plot_accuracy(rows, out_dir / "comparison.png")


def build_report(run_dir: Path) -> str:
    """Return the Markdown report of the run in ``run_dir`` (stages that did not run are omitted)."""
    sample = _load(run_dir / "sample" / "manifest.json")
    train = _load(run_dir / "train" / "manifest.json")
    trained = METHOD_LABELS.get((sample or {}).get("config", {}).get("method", "upft"), "UPFT")
    evals = {label if label == "base" else trained: _load(run_dir / sub / "metrics.json") for label, sub in EVAL_DIRS}
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
