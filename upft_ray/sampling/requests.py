"""From a chunk of question records to generation requests (the Ray Data read step of sampling).

A seeded draw per question id makes a share ``structure_ratio`` of the questions *full* (decoded up
to ``max_new_tokens``, trained whole); the rest are *prefix* questions, decoded for only
``prefix_tokens`` tokens, so no token is sampled that UPFT will not train on. The baselines: ``sft``
and ``rft`` decode every row whole (kind full); ``label_filter`` keeps UPFT's draw but decodes whole
solutions, so they can be graded before their prefixes are trained on. Each question gets
``num_samples`` requests (sample_index 0..n-1). Records that cannot be used become rows with a
``reject_reason`` and travel with their chunk, so the shard writer accounts for every record.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import pandas as pd

from upft_ray.config import MODEL_DEFAULT, SampleConfig
from upft_ray.engine.models import generation_defaults
from upft_ray.engine.prompts import chat_messages
from upft_ray.engine.settings import request_seed
from upft_ray.io.questions import rejected_row, validate_record
from upft_ray.io.sources import SourceFile, scan_records
from upft_ray.sampling.plan import Chunk

REQUEST_COLUMNS = ["record", "number", "question_id", "question", "answer", "sample_index",
                   "kind", "messages", "train_messages", "task_template", "max_tokens", "temperature", "top_p",
                   "top_k", "request_seed", "reject_reason", "source", "raw"]


def draw_kind(question_id: str, seed: int, structure_ratio: float) -> str:
    """Return "full" for a seeded share ``structure_ratio`` of question ids, else "prefix".

    The draw hashes (seed, id), so it does not depend on row order or on how the rows are split
    across workers, and the same seed always gives the same split."""
    digest = hashlib.sha256(f"{seed}:{question_id}".encode()).digest()
    uniform = int.from_bytes(digest[:8], "big") / 2**64
    return "full" if uniform < structure_ratio else "prefix"


SAMPLING_FIELDS = ("temperature", "top_p", "top_k")


@dataclass(frozen=True)
class SampleContext:
    """What the sampling steps of a chunk need: the (resolved) sample config, the run seed, the model's name."""
    sample: SampleConfig
    seed: int
    model: str


def resolve_sampling(s: SampleConfig, model_path: str) -> tuple[SampleConfig, dict]:
    """Return (``s`` with every ``model`` sampling field replaced by the model's generation_config value,
    a record of the values used and where each came from, for the sample manifest).

    Explicit values win. The model is read only when a field says ``model``; see
    ``upft_ray.engine.models.generation_defaults`` for the fallback when its generation_config is silent."""
    wanted = [f for f in SAMPLING_FIELDS if getattr(s, f) == MODEL_DEFAULT]
    defaults = generation_defaults(model_path) if wanted else {}
    values = {f: defaults[f] if f in wanted else getattr(s, f) for f in SAMPLING_FIELDS}
    record = {**values, "from_model": wanted, "source": defaults.get("source", "config")}
    return s.model_copy(update=values), record


def build_requests(rows: list[dict], s: SampleConfig, seed: int) -> list[dict]:
    """Return ``s.num_samples`` generation requests per question row: kind, prompts, sampling params.

    The sampling params are copied from ``s`` as they are: the sampler resolves ``model`` values
    (``resolve_sampling``) before it builds requests."""
    requests = []
    for row in rows:
        kind = "full" if s.method in ("sft", "rft") else draw_kind(row["id"], seed, s.structure_ratio)
        template = s.task_template if kind == "prefix" else ""
        # label_filter must see whole solutions to grade them; its prefixes are cut at training time.
        decode_whole = kind == "full" or s.method == "label_filter"
        # The sampler sees the plain question: a prefix is the opening of the model's own natural
        # solution. The task template is part of the training prompt only (paper, App. A.1).
        messages = json.dumps(chat_messages(row["question"], s.system_prompt))
        train_messages = json.dumps(chat_messages(row["question"], s.system_prompt, template))
        for k in range(s.num_samples):
            requests.append({
                "question_id": row["id"], "question": row["question"], "answer": row["answer"],
                "sample_index": k, "kind": kind, "messages": messages, "train_messages": train_messages,
                "task_template": template,
                "max_tokens": s.max_new_tokens if decode_whole else s.prefix_tokens,
                "temperature": s.temperature, "top_p": s.top_p, "top_k": s.top_k,
                "request_seed": request_seed(seed, row["id"], k),
            })
    return requests


def read_chunk(chunk: Chunk, context: SampleContext) -> pd.DataFrame:
    """Read one chunk of the question source; return its request rows (``upft_ray.execution.job``).

    Every record yields rows: ``num_samples`` requests, or one row with its ``reject_reason`` (an
    unusable record, a repeated id, or a record whose requests could not be built, with the error).
    Rows carry the record's index in the chunk (``record``) and its line/row ``number``."""
    out: list[dict] = []
    columns = context.sample.columns_spec()
    file = SourceFile(chunk.file, chunk.format, 0, "")
    records = scan_records(file, columns, chunk.start, chunk.stop, chunk.first_number)
    for index, (number, record, _) in enumerate(records):
        reason, row = validate_record(record, columns)
        if reason is None and str(number) in chunk.duplicates:
            reason = f"duplicate id: {row['id']!r}, first at {chunk.duplicates[str(number)]}"
        requests = []
        if reason is None:
            try:
                requests = build_requests([row], context.sample, context.seed)
            except Exception as err:  # noqa: BLE001 -- one record's failure costs that record only
                reason = f"request_build_error: {type(err).__name__}: {' '.join(str(err).split())[:300]}"
        if reason is not None:
            out.append({"record": index, **_reject_fields(rejected_row(chunk.file, number, reason, record))})
            continue
        out += [{"record": index, "number": number, "reject_reason": "", "source": chunk.file, "raw": "", **req}
                for req in requests]
    return pd.DataFrame(out, columns=REQUEST_COLUMNS)


def _reject_fields(rejected: dict) -> dict:
    """Return a request-shaped row for a rejected record (empty request fields)."""
    return {"number": rejected["line"], "question_id": "", "question": "", "answer": "", "sample_index": 0,
            "kind": "", "messages": "", "train_messages": "", "task_template": "", "max_tokens": 0,
            "temperature": 0.0, "top_p": 1.0, "top_k": 0, "request_seed": 0, "reject_reason": rejected["reason"],
            "source": rejected["source"], "raw": rejected["raw"]}
