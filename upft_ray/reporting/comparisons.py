"""Evaluated models side by side, with statistics: accuracy intervals and paired tests, as Markdown.

Reads what the evaluation stage wrote: ``<eval dir>/metrics.json`` (counts per benchmark) and
``<eval dir>/<benchmark>.parquet`` (one row per question and sample, EVAL_SCHEMA). Two models are
paired on (benchmark, question_id, sample_index); a row only one of them has (a prompt that did not
fit one run's context, a different ``eval.max_questions``) is left out of the test and counted in
the ``unpaired`` column, never dropped silently. The formulas are in ``upft_ray.stats``.

With ``eval.decoding: sample`` (k samples per question) every sample is a row: the intervals and
tests then treat a question's k samples as independent, which understates the noise; greedy
evaluation (one row per question) is what they are exact for.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from upft_ray.reporting.stats import PairedComparison, SeedSummary, compare_paired, verdict, wilson_interval

STATS_NOTE = ("Accuracy in %: correct/graded with its 95% Wilson score interval in brackets. Paired differences "
              "are in accuracy points on the rows both models answered (benchmark, question, sample), with "
              "Newcombe's hybrid score interval for paired proportions and the exact McNemar test (two-sided "
              "binomial test on the discordant rows); verdict at alpha 0.05: better / worse / within noise.")

Correctness = dict[tuple[str, str, int], bool]


def read_metrics(eval_dir: Path) -> dict | None:
    """Return ``eval_dir/metrics.json`` as a dict, or None when the evaluation has not finished."""
    path = eval_dir / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else None


def eval_correctness(eval_dir: Path, benchmark: str) -> Correctness | None:
    """Return {(benchmark, question_id, sample_index): correct} from ``eval_dir/<benchmark>.parquet``,
    or None when that file is missing (an evaluation written before per-question files existed)."""
    path = eval_dir / f"{benchmark}.parquet"
    if not path.is_file():
        return None
    table = pq.read_table(path, columns=["benchmark", "question_id", "sample_index", "correct"]).to_pydict()
    return {(b, q, int(s)): bool(c) for b, q, s, c in zip(table["benchmark"], table["question_id"],
                                                           table["sample_index"], table["correct"])}


def accuracy_cell(m: dict | None) -> str:
    """Return "acc (correct/graded) [lo, hi]" in % for one benchmark's metrics ("-" when absent)."""
    if not m:
        return "-"
    if "graded" not in m:  # metrics written without counts: no interval can be given
        return f"{100 * m['accuracy']:.1f} (counts unknown)"
    if not m["graded"]:
        return "- (0 graded)"
    lo, hi = wilson_interval(m["correct"], m["graded"])
    return f"{100 * m['accuracy']:.1f} ({m['correct']}/{m['graded']}) [{100 * lo:.1f}, {100 * hi:.1f}]"


def paired(a_dir: Path, b_dir: Path, benchmark: str) -> PairedComparison | str:
    """Return model A (``a_dir``) vs model B (``b_dir``) on one benchmark, or why they cannot be paired."""
    a, b = eval_correctness(a_dir, benchmark), eval_correctness(b_dir, benchmark)
    missing = [str(d / f"{benchmark}.parquet") for d, rows in ((a_dir, a), (b_dir, b)) if rows is None]
    if missing:
        return f"not compared: no per-question results ({', '.join(missing)} missing)"
    result = compare_paired(a, b)
    return result if result else "not compared: the two evaluations share no question"


def _p(p: float | None) -> str:
    return "-" if p is None else f"{p:.2g}" if p < 0.001 else f"{p:.3f}"


def _pts(x: float) -> str:
    return f"{100 * x:+.1f}"


PAIRED_HEADER = ["| model | vs | benchmark | paired rows | accuracy | vs accuracy | difference (pts) | 95% CI | "
                 "only model right / only vs right | p (McNemar) | verdict | unpaired (model / vs) |",
                 "|---|---|---|---|---|---|---|---|---|---|---|---|"]


def paired_line(label: str, versus: str, benchmark: str, result: PairedComparison | str) -> str:
    """Return one PAIRED_HEADER row (or a row that says why the pair was not compared)."""
    if isinstance(result, str):
        return f"| {label} | {versus} | {benchmark} | {result} |" + " |" * 8
    r = result
    return (f"| {label} | {versus} | {benchmark} | {r.paired} | {100 * r.a_correct / r.paired:.1f} | "
            f"{100 * r.b_correct / r.paired:.1f} | {_pts(r.difference)} | [{_pts(r.lower)}, {_pts(r.upper)}] | "
            f"{r.only_a} / {r.only_b} | {_p(r.p_value)} | {r.verdict} | {r.only_in_a} / {r.only_in_b} |")


def paired_section(pairs: list[tuple[str, Path, str, Path]]) -> list[str]:
    """Return Markdown lines comparing each (label, eval dir, vs label, vs eval dir) on their shared benchmarks."""
    lines = list(PAIRED_HEADER)
    for label, a_dir, versus, b_dir in pairs:
        a_m, b_m = read_metrics(a_dir), read_metrics(b_dir)
        if not (a_m and b_m):
            continue
        for name in sorted(a_m["benchmarks"].keys() & b_m["benchmarks"].keys()):
            lines.append(paired_line(label, versus, name, paired(a_dir, b_dir, name)))
    return lines if len(lines) > 2 else []


def seed_cell(s: SeedSummary | None, signed: bool = False) -> str:
    """Return "mean +- std [lo, hi] (n runs)" of a SeedSummary, values in % (an accuracy's interval is
    clipped to [0, 100]) or, with ``signed``, in points."""
    if s is None:
        return "-"
    fmt = "{:+.1f}" if signed else "{:.1f}"
    if s.std is None:
        return fmt.format(s.mean) + " (1 run)"
    lo, hi = (s.lower, s.upper) if signed else (max(0.0, s.lower), min(100.0, s.upper))
    return f"{fmt.format(s.mean)} +- {s.std:.1f} [{fmt.format(lo)}, {fmt.format(hi)}] ({s.n} runs)"


def seed_verdict(s: SeedSummary | None) -> str:
    """Return the verdict of a difference summarised over seeds (t test of mean = 0)."""
    return verdict(s.p_value, s.mean) if s and s.p_value is not None else "-"
