"""Evaluation: benchmarks -> chunks of questions -> engine actors (generate, grade, commit) -> Parquet.

Runs on the chunked executor (``upft_ray.execution``), like sampling: every chunk is committed as it
finishes (``shards/``, ``chunks/``), so an evaluation killed part way resumes from its committed chunks
when the same command runs again. At the end it writes ``<out>/<benchmark>.parquet`` (EVAL_SCHEMA, one
row per question and sample), ``<out>/rejected.parquet`` (unusable question rows and questions the
engine could not answer, with reasons) and, last, ``<out>/metrics.json``: accuracy per benchmark (mean
over samples), the answers that were missing, unparsable, timed out or failed to grade, pass@k / maj@k
when k > 1 samples are drawn, and how many chunks were reused. With ``eval.judge`` set, every graded row
is also judged by an LLM judge (``judge.py``, its own chunks under ``<out>/judge/``): the benchmark files
gain the judge's columns and ``correct_rule_or_judge``, the metrics its accuracy and rule-or-judge's.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from upft_ray.config import PipelineConfig, config_to_dict
from upft_ray.config.hashing import config_hash
from upft_ray.evaluation.finish import finish_unit
from upft_ray.evaluation.judge import run_judge
from upft_ray.evaluation.metrics import benchmark_metrics
from upft_ray.evaluation.plan import eval_identity, plan_evaluation
from upft_ray.evaluation.requests import EvalContext, build_eval_requests, cut_chunks, read_eval_chunk
from upft_ray.execution.driver import Progress, run_chunks
from upft_ray.execution.job import ChunkJob
from upft_ray.io.chunk_store import ChunkStore
from upft_ray.io.durable import write_parquet_durably
from upft_ray.io.manifests import package_versions, write_json_atomic, write_rejected
from upft_ray.io.schema import EVAL_JUDGED_SCHEMA, EVAL_SCHEMA, REJECTED_SCHEMA


def run_evaluate(cfg: PipelineConfig, model_path: str, out_dir: Path, label: str) -> dict:
    """Evaluate the checkpoint at ``model_path`` into ``out_dir`` (Ray must be up); return the metrics.

    Raises ValueError when ``out_dir`` holds committed chunks of another evaluation (or ``out_dir/judge``
    verdicts of another judge), RuntimeError if a benchmark's counts do not balance (read != questions
    graded + rejected)."""
    log = logging.getLogger(f"upft.eval.{label}")
    started, e = time.time(), cfg.eval
    requests, rejected, read = build_eval_requests(cfg)
    store = ChunkStore(out_dir)
    store.prepare()
    fresh = [len(c) for c in cut_chunks(requests, e.engine.batch_size)]
    identity = eval_identity(cfg, model_path)
    sizes, resumed = plan_evaluation(out_dir, identity, requests, fresh)
    chunks = _cut(requests, sizes)
    store.mark_interrupted()
    todo = [i for i, c in enumerate(chunks) if store.chunk_units(i, c[-1]["record"] + 1) is None]
    log.info("%d generations (%s, k=%d) over %s in %d chunks; %s%d chunks done, %d to run; model %s", len(requests),
             e.decoding, e.num_samples, ", ".join(read), len(chunks), "resuming: " if resumed else "",
             len(chunks) - len(todo), len(todo), model_path)
    if todo:
        _generate(cfg, model_path, out_dir, label, chunks, todo, log)
    graded, keys = collect_graded(store, chunks)
    judged = None
    if e.judge.model:
        graded, judged = run_judge(cfg, graded, out_dir, label, config_hash(identity))
    metrics = write_results(cfg, store, keys, graded, rejected, read, out_dir)
    metrics.update(label=label, model_path=model_path, config=config_to_dict(e), versions=package_versions(),
                   chunks={"total": len(chunks), "reused": len(chunks) - len(todo), "written": len(todo)},
                   faults=store.fault_counts(), engine_dtypes=store.engine_dtypes(),
                   wall_time_s=round(time.time() - started, 2))
    if judged is not None:
        metrics["judge"] = judged
    write_json_atomic(out_dir / "metrics.json", metrics)
    _log_accuracy(log, metrics)
    return metrics


def _generate(cfg: PipelineConfig, model_path: str, out_dir: Path, label: str, chunks: list[list[dict]],
              todo: list[int], log: logging.Logger) -> None:
    """Generate, grade and commit the chunks in ``todo`` on the evaluation's engine pool."""
    e = cfg.eval
    job = ChunkJob(str(out_dir), {i: (chunks[i], chunks[i][-1]["record"] + 1) for i in todo}, read_eval_chunk,
                   finish_unit, EvalContext(e), f"eval:{label}")
    questions = sum(chunks[i][-1]["record"] + 1 for i in range(len(chunks)))
    done = questions - sum(chunks[i][-1]["record"] + 1 for i in todo)
    run_chunks(job, todo, model_path, e.engine, cfg.seed,
               Progress(log, len(chunks), questions, len(chunks) - len(todo), done))


def _log_accuracy(log: logging.Logger, metrics: dict) -> None:
    for name, m in metrics["benchmarks"].items():
        extra = "".join(f", {key} {m[key]:.3f}" for key in m if key.startswith(("pass@", "maj@")))
        if "accuracy_judge" in m:
            extra += (f", judge {m['accuracy_judge']:.3f} ({m['judge_unparsable']} unparsable), rule or judge "
                      f"{m['accuracy_rule_or_judge']:.3f}")
        log.info("%s: accuracy %.3f (%d/%d)%s", name, m["accuracy"], m["correct"], m["graded"], extra)


def _cut(requests: list[dict], sizes: list[int]) -> list[list[dict]]:
    """Return ``requests`` cut into chunks of ``sizes`` (the plan's), records renumbered per chunk."""
    out, start = [], 0
    for size in sizes:
        out.append(cut_chunks(requests[start:start + size], size)[0] if size else [])
        start += size
    return out


def collect_graded(store: ChunkStore, chunks: list[list[dict]]) -> tuple[pd.DataFrame, list[str]]:
    """Return (every committed graded row of ``chunks``, sorted by benchmark, question and sample; the keys
    of the committed units). Raises RuntimeError naming the chunks not committed."""
    keys = store.committed_units(((i, c[-1]["record"] + 1) for i, c in enumerate(chunks)), "evaluation chunk")
    graded = store.read_shards(keys, EVAL_SCHEMA).to_pandas()
    return graded.sort_values(["benchmark", "question_id", "sample_index"], kind="stable", ignore_index=True), keys


def write_results(cfg: PipelineConfig, store: ChunkStore, keys: list[str], graded: pd.DataFrame,
                  rejected_at_load: list[dict], read: dict[str, int], out_dir: Path) -> dict:
    """Write ``graded`` (with the judge's columns when a judge ran) into ``<benchmark>.parquet`` files and the
    rejected rows of the load and of the units ``keys`` into ``rejected.parquet``; return the metrics per
    benchmark. Raises RuntimeError when a benchmark's counts do not balance."""
    schema = EVAL_JUDGED_SCHEMA if "judge_status" in graded.columns else EVAL_SCHEMA
    parts = [pq.read_table(store.rejected_path(k), schema=REJECTED_SCHEMA).to_pylist() for k in keys
             if store.rejected_path(k).is_file()]
    unit_rejects = [r for part in parts for r in part]
    write_rejected(out_dir / "rejected.parquet",
                   [{k: r[k] for k in ("source", "line", "reason", "raw")} for r in rejected_at_load] + unit_rejects)
    at_load = pd.Series([r["benchmark"] for r in rejected_at_load], dtype=object).value_counts()
    later = pd.Series([s["by_benchmark"] for s in map(store.read_summary, keys)], dtype=object)
    metrics = {"benchmarks": {}}
    for name, rows_read in read.items():
        part = graded[graded["benchmark"] == name]
        write_parquet_durably(pa.Table.from_pandas(part, schema=schema, preserve_index=False),
                              out_dir / f"{name}.parquet")
        n_rej = int(at_load.get(name, 0)) + sum(b.get(name, {}).get("rejected", 0) for b in later)
        m = benchmark_metrics(part, rows_read, n_rej, cfg.eval.num_samples)
        if m["questions"] + n_rej != rows_read:
            raise RuntimeError(f"eval counts do not balance for {name}: read {rows_read}, graded {m['questions']}, "
                               f"rejected {n_rej}")
        metrics["benchmarks"][name] = m
    return metrics
