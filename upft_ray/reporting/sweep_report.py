"""RUN/report.md of a sweep: accuracy per variant over seeds, paired differences vs base and vs SFT.

Statistics (formulas in ``upft_ray.stats``): each variant's accuracy is the mean +- sample std over
its seeds with a 95% Student t interval; the base model is evaluated once and gets its Wilson
interval. Each run is compared with the base, and with the SFT variant's run of the same seed, on
the same questions (exact McNemar, Newcombe interval). A variant's difference is the mean over seeds
of its runs' paired differences, with a t interval and a one-sample t test over seeds (the seeds'
spread is the noise the training adds; with one seed, that run's McNemar test). The verdict says
better / worse / within noise at alpha 0.05; the every-run table shows each run's own test.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from upft_ray.reporting.comparisons import (
    PAIRED_HEADER,
    STATS_NOTE,
    accuracy_cell,
    paired,
    paired_line,
    read_metrics,
    seed_cell,
    seed_verdict,
)
from upft_ray.reporting.efficiency import METHOD_LABELS, efficiency_table
from upft_ray.reporting.stats import PairedComparison, seed_summary

SWEEP_NOTE = ("Per variant: accuracy in % as mean +- sample std over seeds, [95% t interval over seeds] (runs); "
              "the base model is evaluated once (correct/graded [95% Wilson interval]). Differences in accuracy "
              "points: each seed's run paired with the base (or the SFT run of the same seed) on the same "
              "questions, then mean +- std over seeds [95% t interval]; p: one-sample t test over seeds (one "
              "seed: that run's exact McNemar test; no spread over seeds: the runs' own verdict when all agree); "
              "verdict at alpha 0.05. The every-run tables give each "
              "run's own paired test.")


def _difference_row(variant: str, versus: str, name: str, results: list[PairedComparison | str]) -> str:
    """Return one row of a variant's difference vs a reference, summarised over its seeds."""
    done = [r for r in results if not isinstance(r, str)]
    if not done:
        return f"| {variant} | {versus} | {name} | - | - | - | no paired run |"
    s = seed_summary([100 * r.difference for r in done])
    if s.n == 1:
        r = done[0]
        cell, p, word = f"{100 * r.difference:+.1f} [{100 * r.lower:+.1f}, {100 * r.upper:+.1f}] (1 run)", r.p_value, r.verdict
    else:
        cell, p, word = seed_cell(s, signed=True), s.p_value, seed_verdict(s)
    tally = [sum(r.verdict == v for r in done) for v in ("better", "worse", "within noise")]
    if s.n > 1 and p is None:  # every seed gave the same difference: no t test; the runs' verdict if unanimous
        word = next((v for v, k in zip(("better", "worse"), tally) if k == s.n), "within noise") + " (no spread)"
    p_text = "-" if p is None else (f"{p:.2g}" if p < 0.001 else f"{p:.3f}")
    return f"| {variant} | {versus} | {name} | {cell} | {p_text} | {word} | {' / '.join(map(str, tally))} |"


def _accuracy_table(names: list[str], base: dict | None, variants: list[tuple[str, str, list[dict]]],
                    expected: dict[str, int]) -> list[str]:
    lines = ["| variant | method | runs | " + " | ".join(names) + " | avg |", "|---|---|---|" + "---|" * (len(names) + 1)]
    if base:
        accs = [100 * base[n]["accuracy"] for n in names if n in base]
        lines.append("| base | - | 1 | " + " | ".join(accuracy_cell(base.get(n)) for n in names)
                     + f" | {statistics.fmean(accs):.1f} |")
    for variant, method, done in variants:
        cells = []
        for n in names:
            values = [100 * m[n]["accuracy"] for m in done if n in m]
            cells.append(seed_cell(seed_summary(values)) if values else "-")
        avgs = [statistics.fmean(100 * b["accuracy"] for b in m.values()) for m in done if m]
        lines.append(f"| {variant} | {method} | {len(done)}/{expected[variant]} | " + " | ".join(cells)
                     + f" | {seed_cell(seed_summary(avgs)) if avgs else '-'} |")
    return lines


def _difference_sections(names: list[str], variants: list[str], method: dict[str, str],
                         finished: list[tuple[str, int, Path]], base_dir: Path | None) -> tuple[list[str], list[str]]:
    """Return (the "Differences vs base / SFT" sections, the every-run paired table) of a sweep report."""
    sft = next((v for v in variants if method[v] == "sft"), None)
    sft_dirs = {s: d / "eval" for v, s, d in finished if v == sft}
    references = []  # (label, variant to skip, the reference eval dir for a seed)
    if base_dir is not None:
        references.append(("base", None, lambda seed: base_dir / "eval_base"))
    if sft:
        references.append((f"SFT ({sft})", sft, sft_dirs.get))
    lines, every_run = [], list(PAIRED_HEADER)
    for label, skip, reference in references:
        lines += ["", f"## Differences vs {label}", "", "| variant | vs | benchmark | difference (pts) | p | verdict | "
                  "runs better / worse / within noise |", "|---|---|---|---|---|---|---|"]
        for variant in (v for v in variants if v != skip):
            mine = [(s, d / "eval", reference(s)) for v, s, d in finished if v == variant and reference(s)]
            for name in names:
                results = [paired(mine_dir, ref, name) for _, mine_dir, ref in mine]
                lines.append(_difference_row(variant, label, name, results))
                every_run += [paired_line(f"{variant}-s{s}", label, name, r) for (s, _, _), r in zip(mine, results)]
    return lines, every_run


def build_sweep_report(title: str, model: str, seeds: list[int], base_dir: Path | None,
                       runs: list[tuple[str, int, Path]], planned: dict[str, tuple[str, int]],
                       failures: dict[str, str], token_runs: list[Path] | None = None) -> str:
    """Return the sweep's Markdown report.

    ``runs``: (variant, seed, run dir) of every run whose results may be reported (finished and made
    by the current config; the caller leaves out stale ones and lists them in ``failures``);
    ``planned``: every variant of the sweep -> (its sample.method, its number of runs); ``token_runs``:
    the run dirs whose token counts are shown (default: ``runs``; a run that failed after sampling
    still spent its tokens, a stale one is not this config's)."""
    base = read_metrics(base_dir / "eval_base") if base_dir else None
    done = {(v, s): read_metrics(d / "eval") for v, s, d in runs}
    variants = list(planned)
    method = {v: m for v, (m, _) in planned.items()}
    names = sorted({b for m in [base, *done.values()] if m for b in m["benchmarks"]})
    per_variant = [(v, METHOD_LABELS.get(method[v], method[v]),
                    [m["benchmarks"] for (x, _), m in done.items() if x == v and m]) for v in variants]
    lines = [f"# Sweep: {title}", "", f"Model `{model}`; seeds {seeds}; a variant's runs are in `<variant>-s<seed>/`.",
             "", SWEEP_NOTE, "", "## Accuracy", "", *_accuracy_table(names, base and base["benchmarks"], per_variant,
                                                                     {v: k for v, (_, k) in planned.items()})]
    finished = [(v, s, d) for v, s, d in runs if done[(v, s)]]
    sections, every_run = _difference_sections(names, variants, method, finished, base_dir if base else None)
    lines += sections
    lines += ["", "## Every run", "", "| run | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for v, s, d in finished:
        metrics = done[(v, s)]["benchmarks"]
        lines.append(f"| {v}-s{s} | " + " | ".join(accuracy_cell(metrics.get(n)) for n in names) + " |")
    if len(every_run) > 2:
        lines += ["", "### Every run, paired", "", STATS_NOTE, "", *every_run]
    efficiency = efficiency_table(token_runs if token_runs is not None else [d for *_, d in runs])
    if efficiency:
        lines += ["", "## Token efficiency (means over seeds)", "", efficiency.rstrip()]
    if failures:
        lines += ["", "## Failed or refused runs (not in the tables above)", ""]
        lines += [f"- `{run}`: {why}" for run, why in failures.items()]
    return "\n".join(lines) + "\n"

