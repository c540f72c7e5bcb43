"""Question rows: column presets, validation of one record, and whole small sets for evaluation.

A valid row is ``{"id": str, "question": str, "answer": str}``. A record that cannot be used
(missing or empty question, non-string field, bad JSON line, text that is not valid Unicode) gets a
reason instead, and the caller keeps it with its line number: rows read = rows kept + rows rejected.
Reading files (JSONL, Parquet, HF ``save_to_disk`` directories, object stores) lives in
``upft_ray.sources``; large sets are streamed in chunks by the sampler, small ones loaded here.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

# name -> (question field, answer field, id field); "" for the id field means "derive it".
COLUMN_PRESETS: dict[str, tuple[str, str, str]] = {
    "generic": ("question", "answer", "id"),           # the bundled sets, most JSONL files
    "omi2": ("problem", "expected_answer", ""),         # nvidia/OpenMathInstruct-2 (no id column)
    "uhard": ("problem", "answer", "id"),               # U-Hard-style math rows (problem/answer)
}


@dataclass(frozen=True)
class Columns:
    """Which record fields hold the question, the gold answer and the id ("" = derive the id)."""

    question: str = "question"
    answer: str = "answer"
    id: str = "id"
    extra: tuple[str, ...] = ()  # further required text fields (a multiple-choice set's options)

    def names(self) -> list[str]:
        """Return the field names to read, in order, without empties or repeats."""
        return list(dict.fromkeys(n for n in (self.question, self.answer, self.id, *self.extra) if n))


def preset_columns(preset: str, question: str = "", answer: str = "", id: str = "") -> Columns:
    """Return the Columns of ``preset`` with any non-empty field name given here taking its place."""
    q, a, i = COLUMN_PRESETS[preset]
    return Columns(question or q, answer or a, id or i)


@dataclass
class QuestionSet:
    """The rows of one question source: ``rows`` kept, ``rejected`` with a reason each."""

    source: str
    rows: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)

    @property
    def num_read(self) -> int:
        """Records read from the source (kept + rejected)."""
        return len(self.rows) + len(self.rejected)


def question_id(question: str) -> str:
    """Return a stable id derived from the question text (for sets without an id column)."""
    return "q-" + hashlib.sha1(question.encode("utf-8")).hexdigest()[:16]


def rejected_row(source: str, number: int, reason: str, record: object) -> dict:
    """Return a REJECTED_SCHEMA row: where the record was, why it was not used, and the record."""
    return {"source": source, "line": number, "reason": reason, "raw": json.dumps(record, default=str)[:2000]}


def _text_problem(value: object, name: str) -> str | None:
    """Return why ``value`` is not usable text, or None."""
    if not isinstance(value, str):
        return f"field {name!r} is {type(value).__name__}, not a string"
    if not value.strip():
        return f"field {name!r} is empty"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return f"field {name!r} is not valid Unicode text (lone surrogate)"
    return None


def validate_record(record: object, columns: Columns) -> tuple[str | None, dict | None]:
    """Return (None, row) for a usable record, else (reason, None). Never raises.

    A record that is a string is an error found while reading it (bad JSON, bad UTF-8)."""
    if isinstance(record, str):
        return record, None
    if not isinstance(record, dict):
        return f"row is {type(record).__name__}, not an object", None
    question = record.get(columns.question)
    if question is None:
        return f"missing field {columns.question!r}", None
    if problem := _text_problem(question, columns.question):
        return problem, None
    answer = record.get(columns.answer, "") if columns.answer else ""
    if answer is None:
        answer = ""
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        answer = str(answer)
    if not isinstance(answer, str):
        return f"field {columns.answer!r} is {type(answer).__name__}, not a string or number", None
    if answer and (problem := _text_problem(answer, columns.answer)):
        return problem, None
    qid = record.get(columns.id) if columns.id else None
    if qid is None:
        qid = question_id(question)
    elif isinstance(qid, (int, str)) and not isinstance(qid, bool):
        qid = str(qid)
        if problem := _text_problem(qid, columns.id):
            return problem, None
    else:
        return f"field {columns.id!r} is {type(qid).__name__}, not a string or integer", None
    extra = [record.get(name) for name in columns.extra]
    for name, value in zip(columns.extra, extra):
        if value is None or _text_problem(value, name):
            return f"field {name!r} is missing or not a non-empty string", None
    row = {"id": qid, "question": question, "answer": answer}
    if columns.extra:
        row["extra"] = extra
    return None, row


def load_questions(source: str, columns: Columns = Columns(), max_questions: int = 0) -> QuestionSet:
    """Read and validate a whole (small) question set; return its kept and rejected rows.

    Duplicate ids are rejected after their first occurrence. Raises FileNotFoundError for a missing
    source and ValueError for an unreadable file or a question column no record has."""
    from upft_ray.sources import iter_source_records

    out = QuestionSet(source=source)
    seen: set[str] = set()
    for file, number, record in iter_source_records(source, columns, max_questions):
        reason, row = validate_record(record, columns)
        if reason is None and row["id"] in seen:
            reason = f"duplicate id: {row['id']!r}"
        if reason is not None:
            out.rejected.append(rejected_row(file, number, reason, record))
            continue
        seen.add(row["id"])
        out.rows.append(row)
    return out
