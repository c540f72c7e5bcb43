"""Prefix self-consistency: how strongly n sampled solutions to one question agree on their first t tokens.

For each question and each prefix length t, the n samples are grouped by their first t token ids
(a sample shorter than t is its own whole sequence). Per (question, t):

- ``modal_share``: share of the samples in the largest group (1.0 = every sample opens the same way);
- ``distinct_prefixes``: number of groups (1 = full agreement, n = none);
- ``pairwise_agreement``: chance that two different samples share their first t tokens;
- ``coverage``: share of the *correct* samples that start with the modal prefix (the paper's coverage:
  how many good completions one prefix leads to; NaN when no sample is correct or gold is absent);
- ``modal_accuracy`` / ``other_accuracy``: accuracy of the samples inside / outside the modal group.

``choose_prefix_tokens`` turns the per-t means into a prefix length (rule in its docstring).
"""

from __future__ import annotations

import math
from collections import Counter

import pandas as pd

from upft_ray.reporting.figures import line_figure

COLUMNS = ["question_id", "prefix_tokens", "num_samples", "modal_share", "distinct_prefixes",
           "pairwise_agreement", "coverage", "modal_accuracy", "other_accuracy"]


def prefix_agreement(samples: list[list[int]], t: int, correct: list[bool] | None = None) -> dict:
    """Return the agreement of one question's ``samples`` (token id lists) on their first ``t`` tokens.

    ``correct`` (one flag per sample, optional) adds coverage and the in/out-of-modal-group accuracy.
    Raises ValueError for an empty sample list or a ``correct`` list of another length."""
    if not samples:
        raise ValueError("prefix_agreement needs at least one sample")
    if correct is not None and len(correct) != len(samples):
        raise ValueError(f"{len(correct)} correctness flags for {len(samples)} samples")
    keys = [tuple(s[:t]) for s in samples]
    sizes = Counter(keys)
    n = len(samples)
    modal_key, modal_size = max(sizes.items(), key=lambda kv: (kv[1], kv[0] == keys[0]))
    row = {"prefix_tokens": t, "num_samples": n, "modal_share": modal_size / n, "distinct_prefixes": len(sizes),
           "pairwise_agreement": sum(c * (c - 1) for c in sizes.values()) / (n * (n - 1)) if n > 1 else 1.0,
           "coverage": math.nan, "modal_accuracy": math.nan, "other_accuracy": math.nan}
    if correct is not None:
        inside = [ok for k, ok in zip(keys, correct) if k == modal_key]
        outside = [ok for k, ok in zip(keys, correct) if k != modal_key]
        row["modal_accuracy"] = sum(inside) / len(inside)
        row["other_accuracy"] = sum(outside) / len(outside) if outside else math.nan
        row["coverage"] = sum(inside) / sum(correct) if any(correct) else math.nan
    return row


def agreement_table(samples: pd.DataFrame, prefix_lengths: list[int]) -> pd.DataFrame:
    """Return one row per (question, t) for ``samples`` (columns question_id, response_token_ids and,
    optionally, correct), in COLUMNS order."""
    rows = []
    graded = "correct" in samples.columns
    for qid, group in samples.groupby("question_id", sort=True):
        ids = [list(x) for x in group["response_token_ids"]]
        flags = [bool(x) for x in group["correct"]] if graded else None
        for t in prefix_lengths:
            rows.append({"question_id": qid, **prefix_agreement(ids, t, flags)})
    return pd.DataFrame(rows, columns=COLUMNS)


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Return the per-t means of ``agreement_table`` (NaNs skipped), one row per prefix length."""
    metrics = ["modal_share", "distinct_prefixes", "pairwise_agreement", "coverage", "modal_accuracy",
               "other_accuracy"]
    out = table.groupby("prefix_tokens")[metrics].mean().reset_index()
    out.insert(1, "questions", table.groupby("prefix_tokens")["question_id"].nunique().to_numpy())
    return out


def choose_prefix_tokens(summary: pd.DataFrame, min_agreement: float) -> tuple[int, str]:
    """Return (t, reason): the longest measured t whose mean modal share is still >= ``min_agreement``.

    Why: the paper's bound trades coverage (a short prefix is shared by many good solutions, so
    training on it pushes towards what most samples do) against information (a longer prefix
    teaches more of the solution, but past the point where samples diverge it starts to encode one
    sample's idiosyncrasies, and errors accumulate later in a trajectory). The modal share is the
    measured coverage of the most common opening; we take the longest prefix that a majority
    (by default) of samples still share. With no t above the threshold, the shortest measured t."""
    ordered = summary.sort_values("prefix_tokens")
    ok = ordered[ordered["modal_share"] >= min_agreement]
    shares = ", ".join(f"t={int(r.prefix_tokens)}: {r.modal_share:.2f}" for r in ordered.itertuples())
    if ok.empty:
        t = int(ordered["prefix_tokens"].iloc[0])
        return t, (f"t={t}: no measured prefix length keeps a mean modal-prefix share >= {min_agreement} "
                   f"({shares}); the shortest was taken")
    t = int(ok["prefix_tokens"].max())
    return t, f"t={t}: the longest prefix length with mean modal-prefix share >= {min_agreement} ({shares})"


def plot_consistency(summary: pd.DataFrame, path, title: str = "prefix self-consistency"):
    """Write a PNG of the per-t agreement (and coverage, where graded) to ``path``; return ``path``."""
    ts = summary["prefix_tokens"]
    with line_figure(path, title, "prefix length t (tokens)") as ax:
        for column, label in (("modal_share", "modal-prefix share"), ("pairwise_agreement", "pairwise agreement"),
                              ("coverage", "coverage of correct samples")):
            if summary[column].notna().any():
                ax.plot(ts, summary[column], marker="o", label=label)
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(ts), [str(int(t)) for t in ts])
    return path
