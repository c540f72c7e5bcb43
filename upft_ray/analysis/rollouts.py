"""Error localisation (the paper's Mechanism 2): where along a solution does it go wrong?

From sampled, graded solutions (the consistency measurement's), up to ``analyze.rollout_questions``
correct and as many incorrect trajectories are taken (the first of each kind per question). Each is
cut at ``analyze.rollout_positions`` (shares of its length); from every cut, m completions are
sampled through the vLLM actors, and graded. Success rate by cut position, for correct and
incorrect trajectories, shows where a trajectory's fate is decided: along correct ones it rises
towards 1, along incorrect ones it falls once the error is in the prefix.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from upft_ray.config import PipelineConfig
from upft_ray.engine.models import resolve_model
from upft_ray.engine.pool import add_generation
from upft_ray.engine.settings import request_seed, unanswered
from upft_ray.grading import grade_safely
from upft_ray.io.manifests import write_json_atomic
from upft_ray.reporting.figures import line_figure
from upft_ray.sampling.prefix_length import consistency_config, graded_samples, run_consistency
from upft_ray.sampling.requests import resolve_sampling

log = logging.getLogger("upft.analyze")


def pick_trajectories(samples: pd.DataFrame, per_kind: int) -> pd.DataFrame:
    """Return up to ``per_kind`` correct and ``per_kind`` incorrect solutions, the first of each kind per
    question, questions in id order. Raises ValueError when the samples are not graded."""
    if "correct" not in samples.columns:
        raise ValueError("rollouts need graded solutions: the questions have no gold answers")
    firsts = samples.sort_values(["question_id", "sample_index"]).drop_duplicates(["question_id", "correct"])
    return pd.concat([firsts[firsts["correct"] == kind].head(per_kind) for kind in (True, False)],
                     ignore_index=True)


def rollout_requests(trajectories: pd.DataFrame, positions: list[float], m: int, max_new_tokens: int,
                     temperature: float, top_p: float, top_k: int = 0, seed: int = 0) -> pd.DataFrame:
    """Return one generation request per (trajectory, cut position, rollout): the question's messages,
    the response tokens before the cut to continue from, what is left of the token budget, and the
    request's seed (hashed from ``seed``, question, trajectory kind, position and rollout)."""
    rows = []
    for traj_id, t in enumerate(trajectories.itertuples()):
        response = [int(x) for x in t.response_token_ids]
        for share in positions:
            cut = int(share * len(response))
            for k in range(m):
                rows.append({"trajectory": traj_id, "question_id": t.question_id, "answer": t.answer,
                             "trajectory_correct": bool(t.correct), "position": float(share), "cut_tokens": cut,
                             "rollout": k, "messages": t.train_messages, "continue_from_token_ids": response[:cut],
                             "max_tokens": max(1, max_new_tokens - cut), "temperature": temperature, "top_p": top_p,
                             "top_k": top_k, "request_seed": request_seed(
                                 seed, t.question_id, k, "rollout", bool(t.correct), share)})
    return pd.DataFrame(rows)


def success_by_position(graded: pd.DataFrame) -> pd.DataFrame:
    """Return the success rate (and counts) per (trajectory_correct, position) of graded rollouts."""
    out = graded.groupby(["trajectory_correct", "position"]).agg(
        success_rate=("correct", "mean"), rollouts=("correct", "size"),
        trajectories=("trajectory", "nunique")).reset_index()
    return out.sort_values(["trajectory_correct", "position"], ascending=[False, True]).reset_index(drop=True)


def plot_rollouts(summary: pd.DataFrame, path, title: str):
    """Write the success-rate-by-position PNG to ``path``; return ``path``."""
    with line_figure(path, title, "rollout starts after this share of the solution (%)",
                     "rollouts reaching the right answer (%)", (0, 102)) as ax:
        for kind, label in ((True, "along correct solutions"), (False, "along incorrect solutions")):
            part = summary[summary["trajectory_correct"] == kind]
            if len(part):
                ax.plot(100 * part["position"], 100 * part["success_rate"], marker="o", label=label)
    return path


def grade_rollouts(out: pd.DataFrame, model_path: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (graded rollouts, rollouts the engine could not run). The answer is judged on the whole
    solution: the kept prefix followed by the rollout. A rollout that did not run (its prompt does not fit,
    or it failed alone) is no evidence either way: it is set aside with its reason, never graded."""
    from transformers import AutoTokenizer  # heavy: loaded when the analysis runs

    unrun = [unanswered(f) for f in out["finish_reason"]]
    rejected, out = out[unrun], out[[not u for u in unrun]].reset_index(drop=True)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    texts = [tokenizer.decode(list(p), skip_special_tokens=True) + r
             for p, r in zip(out["continue_from_token_ids"], out["response_text"])]
    out["correct"] = [grade_safely(text, gold).correct for text, gold in zip(texts, out["answer"])]
    return out, rejected


def write_rollouts(out_dir: Path, out: pd.DataFrame, rejected: pd.DataFrame, title: str) -> pd.DataFrame:
    """Write rollouts.parquet, rejected.parquet, summary.parquet and rollouts.png; return the summary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    keep = ["trajectory", "question_id", "trajectory_correct", "position", "cut_tokens", "rollout", "response_text",
            "num_response_tokens", "finish_reason", "correct"]
    out[keep].to_parquet(out_dir / "rollouts.parquet", index=False)
    rejected[["trajectory", "question_id", "position", "rollout", "finish_reason"]].rename(
        columns={"finish_reason": "reason"}).to_parquet(out_dir / "rejected.parquet", index=False)
    summary = success_by_position(out)
    summary.to_parquet(out_dir / "summary.parquet", index=False)
    plot_rollouts(summary, out_dir / "rollouts.png", title)
    return summary


def run_rollouts(cfg: PipelineConfig) -> dict:
    """Run the error-localisation analysis (Ray must be up); write ``RUN/analysis/rollouts/``
    ``rollouts.parquet`` (every graded rollout), ``rejected.parquet`` (rollouts the engine could not run,
    with the reason), ``summary.parquet``, ``rollouts.png`` and ``result.json``; return the result.
    Measures consistency first if it has not run."""
    import ray.data  # heavy: Ray loads only when a stage runs

    a = cfg.analyze
    if not (consistency_config(cfg).run_path / "result.json").is_file():
        run_consistency(cfg)
    samples = graded_samples(consistency_config(cfg).run_path / "sample")
    trajectories = pick_trajectories(samples, a.rollout_questions)
    if trajectories.empty:
        raise ValueError("no sampled solution to roll out from")
    model_path = resolve_model(cfg.model)
    sample, _ = resolve_sampling(cfg.sample, model_path)  # the sampler's values ("model" -> generation_config)
    requests = rollout_requests(trajectories, sorted(set(a.rollout_positions)), a.rollouts_per_position,
                                a.max_new_tokens, sample.temperature, sample.top_p, sample.top_k, cfg.seed)
    log.info("rolling out %s completions from %d trajectories (%d correct) at positions %s", f"{len(requests):,}",
             len(trajectories), int(trajectories["correct"].sum()), sorted(set(a.rollout_positions)))
    ds = add_generation(ray.data.from_pandas(requests), model_path, cfg.sample.engine, cfg.seed)
    out, rejected = grade_rollouts(ds.to_pandas(), model_path)
    out_dir = cfg.run_path / "analysis" / "rollouts"
    summary = write_rollouts(out_dir, out, rejected, f"{cfg.model}: {len(trajectories)} trajectories x "
                                                     f"{a.rollouts_per_position} rollouts per cut")
    result = {"model": cfg.model, "trajectories": len(trajectories),
              "correct_trajectories": int(trajectories["correct"].sum()), "rollouts": len(out),
              "rollouts_rejected": len(rejected), "tokens_generated": int(out["num_response_tokens"].sum()),
              "summary": json.loads(summary.to_json(orient="records"))}
    write_json_atomic(out_dir / "result.json", result)
    log.info("success rate by position\n%s", summary.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    log.info("wrote %s", out_dir)
    return result
