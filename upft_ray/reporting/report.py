"""RUN/report.md: base vs UPFT accuracy per benchmark (with intervals and a paired test) and the token
accounting, from stage files; ``comparison.md`` for several runs."""

from __future__ import annotations

import json
from pathlib import Path

from upft_ray.reporting.comparisons import STATS_NOTE, accuracy_cell, paired, paired_section
from upft_ray.reporting.efficiency import METHOD_LABELS, efficiency_table
from upft_ray.reporting.paper_recipe import recipe_lines
from upft_ray.reporting.stats import wilson_interval

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
                         "eval_dir": run_dir / sub, "metrics": metrics["benchmarks"],
                         "accuracy": {b: 100 * m["accuracy"] for b, m in metrics["benchmarks"].items()}})
    return rows


def _interval(m: dict | None) -> str:
    if not m or not m.get("graded"):
        return ""
    lo, hi = wilson_interval(m["correct"], m["graded"])
    return f" [{100 * lo:.1f}, {100 * hi:.1f}]"


def comparison_pairs(rows: list[dict]) -> list[tuple[str, Path, str, Path]]:
    """Return (label, eval dir, "base", base eval dir) for every trained model in ``rows``: paired with its
    own run's base, else with the base of the one run that has one (named in the label)."""
    bases = {r["run"]: r["eval_dir"] for r in rows if r["model"] == "base"}
    pairs = []
    for r in rows:
        if r["model"] == "base":
            continue
        if r["run"] in bases:
            pairs.append((f"{r['run']} {r['model']}", r["eval_dir"], "base", bases[r["run"]]))
        elif len(bases) == 1:
            (run, base_dir), = bases.items()
            pairs.append((f"{r['run']} {r['model']}", r["eval_dir"], f"base ({run})", base_dir))
    return pairs


def comparison_table(rows: list[dict]) -> str:
    """Return the Markdown table of ``accuracy_rows`` (the paper's Table 1 layout, plus tokens)."""
    names = sorted({b for r in rows for b in r["accuracy"]})
    lines = ["| run | model | " + " | ".join(names) + " | avg | tokens sampled | tokens tuned |",
             "|---|---|" + "---|" * (len(names) + 3)]
    for r in rows:
        accs = [r["accuracy"].get(n) for n in names]
        present = [a for a in accs if a is not None]
        cells = [f"{a:.1f}{_interval(r['metrics'].get(n))}" if a is not None else "-" for n, a in zip(names, accs)]
        avg = f"{sum(present) / len(present):.1f}" if present else "-"
        tokens = [f"{v:,}" if v is not None else "-" for v in (r["sampled"], r["tuned"])]
        lines.append(f"| {r['run']} | {r['model']} | " + " | ".join(cells) + f" | {avg} | " + " | ".join(tokens) + " |")
    return "\n".join(lines) + "\n"


def plot_accuracy(rows: list[dict], path: Path) -> Path:
    """Write a grouped bar chart (benchmarks x models) of ``accuracy_rows`` to ``path`` (PNG)."""
    import matplotlib  # heavy: loaded when used

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy: loaded when used

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
    paired = paired_section(comparison_pairs(rows))
    md.write_text("# UPFT comparison\n\nAccuracy in % with its 95% Wilson score interval; tokens from the runs' "
                  "manifests.\n\n" + comparison_table(rows)
                  + ("\n## Trained models vs base (paired on the same questions)\n\n" + STATS_NOTE + "\n\n"
                     + "\n".join(paired) + "\n" if paired else "")
                  + (f"\n## Token efficiency\n\n{efficiency}" if efficiency else ""))
    return md, plot_accuracy(rows, out_dir / "comparison.png")


def verdict_lines(trained: str, eval_dir: Path, base_dir: Path) -> list[str]:
    """Return a "## Verdict" section: per benchmark, whether the trained model beat the base (paired
    exact McNemar test at alpha 0.05 on the same questions), in one plain sentence each."""
    a_m, b_m = _load(eval_dir / "metrics.json"), _load(base_dir / "metrics.json")
    lines = ["## Verdict", ""]
    for name in sorted(a_m["benchmarks"].keys() & b_m["benchmarks"].keys()):
        r = paired(eval_dir, base_dir, name)
        if isinstance(r, str):
            lines.append(f"- {name}: {r}")
            continue
        answer = {"better": f"{trained} beat the base", "worse": f"{trained} is worse than the base",
                  "within noise": f"no difference beyond noise: {trained} did not beat the base"}[r.verdict]
        lines.append(f"- {name}: {trained} {100 * r.a_correct / r.paired:.1f}% vs base {100 * r.b_correct / r.paired:.1f}% "
                     f"on {r.paired} questions, difference {100 * r.difference:+.1f} pts "
                     f"[{100 * r.lower:+.1f}, {100 * r.upper:+.1f}], p = {r.p_value:.3g}: **{r.verdict}** ({answer}).")
    return lines + [""]


def _judged_cell(m: dict | None) -> str:
    if not m or "accuracy_judge" not in m:
        return "-"
    unparsable = f" ({m['judge_unparsable']} unparsable)" if m["judge_unparsable"] else ""
    return (f"{100 * m['accuracy']:.1f} / {100 * m['accuracy_judge']:.1f} / "
            f"{100 * m['accuracy_rule_or_judge']:.1f}{unparsable}")


def judge_lines(evals: dict[str, dict]) -> list[str]:
    """Return the "## Accuracy with the LLM judge" section (rule / judge / rule or judge, per benchmark) for
    the evaluations in ``evals`` (label: metrics) that an LLM judge graded too; [] when none did."""
    judged = {label: m for label, m in evals.items() if "judge" in m}
    if not judged:
        return []
    names = sorted({b for m in judged.values() for b in m["benchmarks"]})
    lines = ["## Accuracy with the LLM judge", "", "Accuracy in % by the rule / by the judge / by the rule or the "
             "judge (the official evaluation's count); a judge report that cannot be read counts as not correct.", "",
             "| model | judge | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for label, m in judged.items():
        lines.append(f"| {label} | `{m['judge']['model']}` | "
                     + " | ".join(_judged_cell(m["benchmarks"].get(n)) for n in names) + " |")
    return lines + [""]


def build_report(run_dir: Path) -> str:
    """Return the Markdown report of the run in ``run_dir`` (stages that did not run are omitted)."""
    sample = _load(run_dir / "sample" / "manifest.json")
    train = _load(run_dir / "train" / "manifest.json")
    trained = METHOD_LABELS.get((sample or {}).get("config", {}).get("method", "upft"), "UPFT")
    evals = {label if label == "base" else trained: _load(run_dir / sub / "metrics.json") for label, sub in EVAL_DIRS}
    evals = {k: v for k, v in evals.items() if v}
    lines = [f"# UPFT run: {run_dir.name}", ""]
    label = (_load(run_dir / "run.json") or {}).get("label")
    if label:
        lines += [f"**{label}**", ""]
    if sample:
        lines += [f"Model: `{sample['model']}`, seed {sample['seed']}, prefix tokens t = "
                  f"{sample['config']['prefix_tokens']}, structure ratio p = {sample['config']['structure_ratio']}"
                  + (f", learning rate {train['config']['learning_rate']:g}, {train['config']['epochs']} epoch(s)"
                     if train and "config" in train else "") + ".", ""]
        stages = {"sample": sample["config"], "sampling": sample.get("sampling_params", {})}
        lines += recipe_lines({**stages, **({"train": train["config"]} if train and "config" in train else {})})
    if "base" in evals and len(evals) == 2:
        lines += verdict_lines(trained, run_dir / "eval", run_dir / "eval_base")
    if evals:
        names = sorted({b for m in evals.values() for b in m["benchmarks"]})
        lines += ["## Accuracy", "", STATS_NOTE, "", "| model | " + " | ".join(names) + " |",
                  "|---|" + "---|" * len(names)]
        for label, metrics in evals.items():
            lines.append(f"| {label} | " + " | ".join(accuracy_cell(metrics["benchmarks"].get(n)) for n in names) + " |")
        lines.append("")
        lines += judge_lines(evals)
        if "base" in evals and len(evals) == 2:
            lines += [f"## {trained} vs base (paired on the same questions)", "",
                      *paired_section([(trained, run_dir / "eval", "base", run_dir / "eval_base")]), ""]
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
