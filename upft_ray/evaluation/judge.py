"""The optional LLM judge of an evaluation (``eval.judge``), as the official UPFT evaluation has it.

Once the answers are generated and rule-graded, every graded row (a question that was rejected has
none) is judged by the judge model: the Omni-Judge prompt (``upft_ray.grading.judge_prompt``) under
the judge's chat template, continued from ``## Student Final Answer``, greedy, at most
``judge.max_new_tokens`` tokens. It runs on the chunked executor like the answers (``upft_ray.execution``),
with an engine pool of its own (``judge.engine``): chunks of ``judge.engine.batch_size`` rows, committed
as they finish under ``<out>/judge/`` (``shards/`` of JUDGE_SCHEMA, ``chunks/``, ``plan.json``), so a
judge pass killed part way resumes from its committed chunks. Its plan's identity is the answers'
plan, the judge settings and the judge model's files: a directory holding verdicts of another judge
is refused, never mixed. A row the judge engine could not answer (its prompt does not fit
``judge.engine.max_model_len``, its request failed) is ``unanswered`` (reason in ``judge_output``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa

from upft_ray.config import PipelineConfig
from upft_ray.config.hashing import RESOURCE_FIELDS, hashed_dict
from upft_ray.config.models import JudgeConfig
from upft_ray.engine.models import resolve_model
from upft_ray.engine.settings import unanswered
from upft_ray.evaluation.plan import model_fingerprint, plan_evaluation
from upft_ray.execution.driver import Progress, run_chunks
from upft_ray.execution.job import ChunkJob
from upft_ray.grading.judge_prompt import JUDGE_PREFILL, judge_messages, parse_verdict
from upft_ray.io.chunk_store import ChunkStore
from upft_ray.io.schema import JUDGE_SCHEMA

UNANSWERED = "unanswered"  # judge_status of a row the judge engine did not answer
KEYS = ["benchmark", "question_id", "sample_index"]
REQUEST_COLUMNS = ["record", *KEYS, "messages", "continue_from_token_ids", "max_tokens", "temperature", "top_p",
                   "reject_reason", "source", "number", "raw"]


@dataclass(frozen=True)
class JudgeContext:
    """What the judge steps of a chunk need: the judge config and the prefill's token ids (judge tokenizer)."""
    judge: JudgeConfig
    prefill_ids: tuple[int, ...]


def judge_cases(graded: pd.DataFrame) -> list[dict]:
    """Return one case per graded row, in the rows' order: its keys, question, gold and output."""
    return graded[[*KEYS, "question", "gold", "output"]].to_dict("records")


def cut_cases(cases: list[dict], sizes: list[int]) -> list[list[dict]]:
    """Return ``cases`` cut into chunks of ``sizes`` rows, each row a record numbered in its chunk."""
    out, start = [], 0
    for size in sizes:
        out.append([{**c, "record": i} for i, c in enumerate(cases[start:start + size])])
        start += size
    return out


def read_judge_chunk(spec: list[dict], context: JudgeContext) -> pd.DataFrame:
    """Return a chunk's judge requests (``upft_ray.execution.job``), one per case: greedy, from the prefill."""
    rows = [{"record": c["record"], **{k: c[k] for k in KEYS},
             "messages": json.dumps(judge_messages(c["question"], c["gold"], c["output"])),
             "continue_from_token_ids": list(context.prefill_ids), "max_tokens": context.judge.max_new_tokens,
             "temperature": 0.0, "top_p": 1.0, "reject_reason": "", "source": c["benchmark"], "number": -1, "raw": ""}
            for c in spec]
    return pd.DataFrame(rows, columns=REQUEST_COLUMNS)


def verdict_row(reject_reason: str, finish_reason: str, text: str) -> dict:
    """Return the judge columns of one judged row (never raises)."""
    if reject_reason or unanswered(finish_reason):
        return {"judge_correct": None, "judge_status": UNANSWERED, "judge_answer": "",
                "judge_output": reject_reason or str(finish_reason)}
    verdict = parse_verdict(text)
    return {"judge_correct": verdict.correct, "judge_status": verdict.status, "judge_answer": verdict.answer,
            "judge_output": text}


def finish_judge_unit(rows: pd.DataFrame, context: JudgeContext) -> tuple[pa.Table, list[dict], dict]:
    """Return (verdict rows, no rejected rows, counts) of one judged unit (``upft_ray.execution.job``): every
    row gets a verdict row, ``unanswered`` when the engine did not answer it."""
    verdicts = [verdict_row(r, f, t) for r, f, t in zip(rows["reject_reason"], rows["finish_reason"],
                                                         rows["response_text"])]
    table = pd.concat([rows[KEYS].reset_index(drop=True), pd.DataFrame(verdicts, columns=JUDGE_SCHEMA.names[3:])],
                      axis=1)
    table["sample_index"] = table["sample_index"].astype("int64")
    records = int(rows["record"].nunique())
    counts = {"records": records, "kept": records, "rejected": 0,
              "generated_tokens": int(rows["num_response_tokens"].sum())}
    return pa.Table.from_pandas(table, schema=JUDGE_SCHEMA, preserve_index=False), [], counts


def judge_identity(judge: JudgeConfig, judge_path: str, answers_hash: str) -> dict:
    """Return what the verdicts depend on: the answers judged (their plan's identity hash), the judge
    settings (engine placement left out) and the judge model's files."""
    settings = hashed_dict(judge)
    settings["engine"] = {k: v for k, v in settings["engine"].items() if k not in RESOURCE_FIELDS}
    return {"answers": answers_hash, "judge": settings, "model": model_fingerprint(judge_path)}


def prefill_ids(judge_path: str) -> tuple[int, ...]:
    """Return the token ids of ``JUDGE_PREFILL`` under the judge model's tokenizer."""
    from transformers import AutoTokenizer  # heavy: loaded when used

    return tuple(AutoTokenizer.from_pretrained(judge_path).encode(JUDGE_PREFILL, add_special_tokens=False))


def run_judge(cfg: PipelineConfig, graded: pd.DataFrame, out_dir: Path, label: str,
              answers_hash: str) -> tuple[pd.DataFrame, dict]:
    """Judge every row of ``graded`` (Ray must be up) into ``out_dir/judge``; return (``graded`` with the
    judge columns and ``correct_rule_or_judge``, the pass's record for metrics.json). Raises ValueError when
    ``out_dir/judge`` holds verdicts of another judge or other answers."""
    log, j = logging.getLogger(f"upft.eval.{label}.judge"), cfg.eval.judge
    judge_path, judge_dir = resolve_model(j.model), out_dir / "judge"
    cases = judge_cases(graded)
    store = ChunkStore(judge_dir)
    store.prepare()
    fresh = [min(j.engine.batch_size, len(cases) - start) for start in range(0, len(cases), j.engine.batch_size)]
    sizes, resumed = plan_evaluation(judge_dir, judge_identity(j, judge_path, answers_hash), cases, fresh)
    chunks = cut_cases(cases, sizes)
    store.mark_interrupted()
    todo = [i for i, c in enumerate(chunks) if store.chunk_units(i, len(c)) is None]
    log.info("judging %d answers with %s in %d chunks; %s%d chunks done, %d to run", len(cases), judge_path,
             len(chunks), "resuming: " if resumed else "", len(chunks) - len(todo), len(todo))
    if todo:
        job = ChunkJob(str(judge_dir), {i: (chunks[i], len(chunks[i])) for i in todo}, read_judge_chunk,
                       finish_judge_unit, JudgeContext(j, prefill_ids(judge_path)), f"judge:{label}")
        done = sum(len(c) for i, c in enumerate(chunks) if i not in todo)
        run_chunks(job, todo, judge_path, j.engine, cfg.seed,
                   Progress(log, len(chunks), len(cases), len(chunks) - len(todo), done, what="answers"))
    verdicts = committed_verdicts(store, chunks)
    record = {"model": j.model, "model_path": judge_path,
              "chunks": {"total": len(chunks), "reused": len(chunks) - len(todo), "written": len(todo)},
              "faults": store.fault_counts(), "engine_dtypes": store.engine_dtypes()}
    return with_verdicts(graded, verdicts), record


def committed_verdicts(store: ChunkStore, chunks: list[list[dict]]) -> pd.DataFrame:
    """Return every committed verdict row of ``chunks``. Raises RuntimeError naming the chunks not committed."""
    keys = store.committed_units(((i, len(c)) for i, c in enumerate(chunks)), "judge chunk")
    return store.read_shards(keys, JUDGE_SCHEMA).to_pandas()


def with_verdicts(graded: pd.DataFrame, verdicts: pd.DataFrame) -> pd.DataFrame:
    """Return ``graded`` with each row's verdict and ``correct_rule_or_judge`` (rule OR a TRUE judgement).
    Raises RuntimeError when a row has no verdict or several."""
    out = graded.merge(verdicts, on=KEYS, how="left", indicator=True)
    if (out["_merge"] != "both").any() or len(verdicts) != len(graded):
        raise RuntimeError(f"judge verdicts do not match the graded rows: {len(verdicts)} verdicts for "
                           f"{len(graded)} rows, {int((out['_merge'] != 'both').sum())} rows without one")
    out = out.drop(columns="_merge")
    out["correct_rule_or_judge"] = out["correct"].astype(bool) | out["judge_correct"].eq(True)
    return out
