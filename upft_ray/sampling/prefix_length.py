"""``sample.prefix_tokens: auto``: measure prefix self-consistency, then choose t from it.

The measurement is an ordinary sample run (n whole solutions per question, no template) under
``RUN/analysis/consistency/``, so it streams, resumes and accounts for every record like any other;
``upft analyze consistency`` runs the same measurement and ``upft analyze rollouts`` continues its
solutions. The rule that turns agreement into t is ``upft_ray.sampling.consistency.choose_prefix_tokens``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from upft_ray.config import PipelineConfig
from upft_ray.grading import grade_safely
from upft_ray.io.manifests import write_json_atomic
from upft_ray.sampling.consistency import agreement_table, choose_prefix_tokens, plot_consistency, summarize
from upft_ray.sampling.pipeline import run_sample

log = logging.getLogger("upft.sample")


def consistency_config(cfg: PipelineConfig) -> PipelineConfig:
    """Return the sampling run that measures consistency: ``analyze.num_samples`` whole solutions per
    question (temperature and engine from ``sample``), under ``RUN/analysis/consistency``."""
    a = cfg.analyze
    sample = cfg.sample.model_copy(update=dict(num_samples=a.num_samples, method="sft", prefix_tokens=1,
                                               max_new_tokens=a.max_new_tokens, max_questions=a.max_questions))
    return cfg.model_copy(update=dict(run_dir=str(cfg.run_path / "analysis" / "consistency"), sample=sample))


def graded_samples(sample_dir: Path) -> pd.DataFrame:
    """Return the sampled solutions in ``sample_dir/shards`` with a ``correct`` column when every
    question has a gold answer (question_id, sample_index, answer, response_text, response_token_ids)."""
    columns = ["question_id", "sample_index", "answer", "prompt_token_ids", "train_messages", "response_text",
               "response_token_ids"]
    shards = sorted((sample_dir / "shards").glob("*.parquet"))
    if not shards:
        raise ValueError(f"no sampled solutions in {sample_dir / 'shards'}: every question was rejected")
    df = pd.concat([pd.read_parquet(s, columns=columns) for s in shards], ignore_index=True)
    df = df.sort_values(["question_id", "sample_index"]).reset_index(drop=True)
    if (df["answer"].str.strip() != "").all():
        df["correct"] = [grade_safely(text, gold).correct for text, gold in zip(df["response_text"], df["answer"])]
    return df


def run_consistency(cfg: PipelineConfig) -> dict:
    """Measure prefix self-consistency (Ray must be up); write ``RUN/analysis/consistency/``
    ``consistency.parquet`` (per question and t), ``summary.parquet`` (per t), ``consistency.png``
    and ``result.json`` (summary + the prefix length ``auto`` would choose, and why); return result."""
    a = cfg.analyze
    ccfg = consistency_config(cfg)
    out = ccfg.run_path
    manifest = run_sample(ccfg)
    samples = graded_samples(out / "sample")
    table = agreement_table(samples, sorted(set(a.prefix_lengths)))
    summary = summarize(table)
    t, reason = choose_prefix_tokens(summary, a.auto_min_agreement)
    table.to_parquet(out / "consistency.parquet", index=False)
    summary.to_parquet(out / "summary.parquet", index=False)
    plot_consistency(summary, out / "consistency.png",
                     f"{cfg.model}: {summary['questions'].iloc[0]} questions x {a.num_samples} samples")
    result = {"model": cfg.model, "questions": int(summary["questions"].iloc[0]), "samples_per_question": a.num_samples,
              "graded": "correct" in samples.columns,
              "accuracy": float(samples["correct"].mean()) if "correct" in samples.columns else None,
              "tokens_sampled": manifest["tokens"]["generated"], "min_agreement": a.auto_min_agreement,
              "chosen_prefix_tokens": t, "reason": reason,
              "summary": json.loads(summary.to_json(orient="records"))}
    write_json_atomic(out / "result.json", result)
    log.info("prefix self-consistency\n%s", summary.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    log.info("prefix_tokens auto would choose %s; wrote %s", reason, out)
    return result


def resolve_prefix_tokens(cfg: PipelineConfig) -> tuple[PipelineConfig, dict | None]:
    """Return ``cfg`` with ``sample.prefix_tokens`` an integer, and the choice made (None unless it was
    ``auto``, in which case the consistency measurement runs, or is reused, first)."""
    if cfg.sample.prefix_tokens != "auto":
        return cfg, None
    result = run_consistency(cfg)
    choice = {"prefix_tokens": result["chosen_prefix_tokens"], "reason": result["reason"],
              "measured_in": str(consistency_config(cfg).run_path)}
    sample = cfg.sample.model_copy(update={"prefix_tokens": choice["prefix_tokens"]})
    return cfg.model_copy(update={"sample": sample}), choice
