"""Write docs/PAPER.md: every row of the paper's two tables -> its job config -> the command -> the paper's
numbers -> resources and an estimated wall time on 8xH100 nodes, with the arithmetic shown.

    .venv/bin/python scripts/paper_doc.py           rewrite docs/PAPER.md
    .venv/bin/python scripts/paper_doc.py --check   exit 1 if docs/PAPER.md differs from what this writes

Rows: ``upft_ray/reporting/paper_tables.py``; settings: the loaded ``jobs/configs/*.yaml``; the training
throughput: the measured H100 figure in ``bench/results/gpu_check_h100/gpu_check_zero3.json``. Decode
throughput has not been measured on a GPU here (the lent GPU machine has no vLLM), so it is a stated
assumption (``DECODE_TOKENS_PER_S``); each estimate shows its inputs so a measured figure can replace it.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))  # doc_blocks: generated files and blocks

from doc_blocks import write_or_check  # noqa: E402

from upft_ray.config import PipelineConfig, load_config  # noqa: E402
from upft_ray.reporting.paper_tables import DATA_LABELS, MODEL_LABELS, SUPERVISED, UNSUPERVISED, PaperRow  # noqa: E402

OUT = ROOT / "docs" / "PAPER.md"
GPU_CHECK = ROOT / "bench" / "results" / "gpu_check_h100" / "gpu_check_zero3.json"
QUESTIONS = {"prm12k": 12_000, "omi2": 600_000, "limo": 817, "uhard": 100_000}  # the paper's sizes
EVAL_QUESTIONS = 1_319 + 500 + 30 + 198  # GSM8K, MATH500, AIME24, GPQA-Diamond
PARAMS = {"llama": 8.03e9, "qwen": 7.62e9, "r1": 7.62e9}  # the models' parameter counts
H100_BF16_FLOPS = 989e12  # dense bf16 peak, as bench/gpu_check.py's MFU uses
GPUS_PER_NODE = 8
PROMPT_TOKENS = 150  # assumed chat-templated question length, added to each trained example
DECODE_TOKENS_PER_S = 2_500  # ASSUMED per H100 vLLM replica, 7-8B bf16, many requests in flight: not measured
RAYJOBS = {p.stem.removeprefix("rayjob-") for p in (ROOT / "cluster").glob("rayjob-*.yaml")}


def measured_mfu() -> tuple[float, str]:
    """Return (MFU, where it comes from) of the measured ZeRO-3 training run on an H100."""
    data = json.loads(GPU_CHECK.read_text())
    zero3 = data["stages"]["zero3"]
    return zero3["mfu"], (f"{zero3['mfu']:.1%} MFU measured by `bench/gpu_check.sh` ({data['device']}, {data['date']}, "
                          f"ZeRO-3, {zero3['parameters'] / 1e9:.2f}B parameters, `{GPU_CHECK.relative_to(ROOT)}`)")


def _sft_length(row: PaperRow) -> float:
    """Return the paper's average full-solution length of ``row``'s model on ``row``'s data (its SFT row's
    tuned length; PRM 12K's where the row's own data has none, else the model's shortest SFT row's)."""
    sft = {r.data: r.tuned_length for r in UNSUPERVISED if (r.model, r.method) == (row.model, "sft")}
    return sft.get(row.data) or sft.get("prm12k") or min(sft.values())


def _tokens(text: str) -> float:
    return float(text.rstrip("M")) * 1e6


def token_budget(row: PaperRow, cfg: PipelineConfig) -> tuple[float, float, str]:
    """Return (tokens sampled, tokens trained over all epochs, the arithmetic) for ``row``."""
    n, t, p, full = QUESTIONS[row.data], cfg.sample.prefix_tokens, cfg.sample.structure_ratio, _sft_length(row)
    epochs, k = cfg.train.epochs, cfg.sample.num_samples
    if row.tokens:  # the supervised table prints both
        sampled, tuned = map(_tokens, row.tokens)
        how = f"sampled {row.tokens[0]}, tuned {row.tokens[1]} per epoch (the paper's table)"
    elif row.method == "upft":
        sampled = n * ((1 - p) * t + p * full)
        tuned = n * row.tuned_length
        how = (f"sampled {n:,} x ((1 - {p:g}) x {t} + {p:g} x {full:,.0f}); tuned {n:,} x {row.tuned_length:g} "
               "(the paper's average tuned length) per epoch")
    else:
        sampled, tuned = n * k * full, n * row.tuned_length
        how = f"sampled {n:,} x {full:,.0f}; tuned {n:,} x {row.tuned_length:g} per epoch"
    trained = epochs * (tuned + n * PROMPT_TOKENS)
    how += f"; trained {epochs} x (tuned + {n:,} x {PROMPT_TOKENS} prompt tokens) = {trained / 1e6:,.1f}M"
    return sampled, trained, how


def gpus(cfg: PipelineConfig) -> tuple[int, int, int]:
    """Return the GPUs of sampling, training and evaluation in ``cfg``."""
    sample, evaluate = cfg.sample.engine, cfg.eval.engine
    return (int(sample.num_replicas * sample.gpus_per_replica), int(cfg.train.num_workers),
            int(evaluate.num_replicas * evaluate.gpus_per_replica))


def wall_time(row: PaperRow, cfg: PipelineConfig, mfu: float) -> tuple[float, str]:
    """Return (estimated hours, the arithmetic) of ``row``'s run: sampling + training + evaluation(s)."""
    g_sample, g_train, g_eval = gpus(cfg)
    evals = 2 if cfg.eval.evaluate_base else 1
    answer = min(_sft_length(row), cfg.eval.max_new_tokens)
    eval_s = evals * EVAL_QUESTIONS * answer / (DECODE_TOKENS_PER_S * g_eval)
    if row.method == "base":
        return eval_s / 3600, (f"evaluation {EVAL_QUESTIONS:,} x {answer:,.0f} tokens / ({DECODE_TOKENS_PER_S:,} x "
                               f"{g_eval}) = {eval_s / 3600:.2f} h")
    sampled, trained, how = token_budget(row, cfg)
    sample_s = sampled / (DECODE_TOKENS_PER_S * g_sample)
    flops = 6 * PARAMS[row.model] * trained * (4 / 3 if cfg.train.gradient_checkpointing else 1)
    train_s = flops / (mfu * H100_BF16_FLOPS * g_train)
    hours = (sample_s + train_s + eval_s) / 3600
    return hours, (f"{how}. Sampling {sampled / 1e6:,.1f}M / ({DECODE_TOKENS_PER_S:,} x {g_sample}) = "
                   f"{sample_s / 3600:.2f} h; training 6 x {PARAMS[row.model] / 1e9:.2f}B x {trained / 1e6:,.1f}M"
                   f"{' x 4/3 (recompute)' if cfg.train.gradient_checkpointing else ''} / ({mfu:.1%} x 989 TFLOP/s x "
                   f"{g_train}) = {train_s / 3600:.2f} h; {evals} evaluation(s) of {EVAL_QUESTIONS:,} x "
                   f"{answer:,.0f} tokens = {eval_s / 3600:.2f} h")


def commands(row: PaperRow) -> str:
    """Return the commands that run ``row``: locally / on a Ray cluster, and the RayJob that holds it."""
    path = f"jobs/configs/{row.config}.yaml"
    if row.method == "base":
        return (f"`upft evaluate -c {path} --model base`; on a cluster `ray job submit -- python jobs/upft_pipeline.py "
                f"--config {path} --stage evaluate`")
    job = max((j for j in RAYJOBS if row.config == j or row.config.startswith(j + "-")), key=len, default="")
    cluster = f"; KubeRay: `kubectl apply -f cluster/rayjob-{job}.yaml`" if job else ""
    return f"`upft run -c {path}`; `ray job submit -- python jobs/upft_pipeline.py --config {path}`{cluster}"


def _scores(row: PaperRow) -> str:
    return " / ".join(f"{s:g}" for s in row.scores)


def row_lines(rows: list[PaperRow], mfu: float) -> tuple[list[str], list[str]]:
    """Return (table lines, estimate lines) for ``rows``."""
    table = ["| paper row | data | config | paper: GSM8K / MATH500 / AIME24 / GPQA / avg | GPUs (sample / train / "
             "eval) | est. wall time |", "|---|---|---|---|---|---|"]
    notes = []
    for i, row in enumerate(rows, 1):
        label = f"{i}. " + (f"{MODEL_LABELS[row.model]} {row.label}" if row.table == "supervised" else row.label)
        data = DATA_LABELS.get(row.data, "") if row.method != "base" else ""
        if not row.config:
            table.append(f"| {label} | {data} | not provided | {_scores(row)} | | |")
            notes.append(f"- Row {i} ({row.label}): {row.note}.")
            continue
        cfg = load_config(ROOT / "jobs" / "configs" / f"{row.config}.yaml")
        hours, how = wall_time(row, cfg, mfu)
        g = gpus(cfg)
        nodes = math.ceil(max(g) / GPUS_PER_NODE)
        table.append(f"| {label} | {data} | [`{row.config}`](../jobs/configs/{row.config}.yaml) | {_scores(row)} | "
                     f"{g[0]} / {g[1]} / {g[2]} ({nodes} node{'s' * (nodes > 1)}) | {hours:,.2f} h |")
        notes.append(f"- Row {i}, `{row.config}`: {commands(row)}. Estimate: {how}.")
        if row.note:
            notes.append(f"  Note: {row.note}.")
    return table, notes


def render() -> str:
    """Return docs/PAPER.md's text."""
    mfu, mfu_source = measured_mfu()
    out = ["# The paper's tables, one command per row", "",
           "<!-- written by `python scripts/paper_doc.py` from upft_ray/reporting/paper_tables.py and jobs/configs/; "
           "tests/reporting/test_paper_tables.py fails when it is stale -->", "",
           "Every row of the paper's two result tables (arXiv 2503.02875; `../shared/UPFT.md` lists them), the job "
           "config that reproduces it, the command that runs it and the paper's numbers. Settings against the official "
           "code, ingredient by ingredient: README, \"Paper fidelity\" (`python cluster/fidelity.py`). Data: README, "
           "\"Preparing the paper's datasets\" (`upft data prepare`); the configs read the prepared files from "
           "`/mnt/shared/data/prepared/`. A UPFT run also evaluates its base model (`RUN/eval_base`), so the base rows "
           "come with any UPFT run of that model; their own configs evaluate the base alone.", ""]
    for title, rows in (("Unsupervised setting (paper Tables 1-2)", UNSUPERVISED),
                        ("Supervised setting: sampling and tuning cost (paper Table 3)", SUPERVISED)):
        table, notes = row_lines(rows, mfu)
        out += [f"## {title}", "", *table, "", "Commands and the arithmetic of each estimate:", "", *notes, ""]
    out += ["## How the wall times are estimated", "",
            f"- Training: 6 x parameters x trained tokens FLOPs (x 4/3 where gradient checkpointing recomputes the "
            f"forward pass) at {mfu_source}. At 7-8B with Adam offload the MFU will differ: replace it with the "
            "figure `bench/gpu_check.sh` measures at the paper's shape.",
            f"- Sampling and evaluation: decoded tokens / ({DECODE_TOKENS_PER_S:,} tokens/s x replicas). "
            f"{DECODE_TOKENS_PER_S:,} tokens/s per H100 for a 7-8B bf16 model is an ASSUMPTION, not a measurement: the "
            "GPU machine lent to this project has no vLLM. Full solutions and answers are taken as long as the paper's "
            "SFT rows' average tuned length for that model and data (PRM 12K's where the row's data has none, else the model's shortest), answers "
            "capped at `eval.max_new_tokens`.",
            f"- Tokens trained per example: the paper's average tuned length + {PROMPT_TOKENS} prompt tokens (assumed); "
            f"questions: the paper's sizes ({', '.join(f'{DATA_LABELS[k]}: {v:,}' for k, v in QUESTIONS.items())}); "
            f"evaluation: {EVAL_QUESTIONS:,} questions (GSM8K 1,319, MATH500 500, AIME24 30, GPQA-Diamond 198).",
            "- Start-up (model loading, ~minutes per stage) and checkpoint writes are left out.", ""]
    return "\n".join(out)


def main() -> int:
    if not write_or_check(OUT, render(), "--check" in sys.argv):
        print("docs/PAPER.md is stale: run python scripts/paper_doc.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
