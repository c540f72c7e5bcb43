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
import math
from dataclasses import dataclass, field
from typing import Callable

from upft_ray.config.columns import Columns
from upft_ray.io.records import RAW_CHARS, Unreadable
from upft_ray.io.sources import iter_source_records


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
    """Return a REJECTED_SCHEMA row: where the record was, why it was not used, and the record as text."""
    if isinstance(record, Unreadable):
        raw = record.raw
    else:
        try:
            raw = json.dumps(record, default=str)
        except (RecursionError, ValueError, TypeError):  # nested too deep to print; the reason says why
            raw = f"<{_kind(record)} too deeply nested to show>"
    return {"source": source, "line": number, "reason": reason or "unusable record", "raw": raw[:RAW_CHARS]}


def _kind(value: object) -> str:
    """Return the name of a value's type for reasons (``null`` for JSON null)."""
    return "null" if value is None else type(value).__name__


def _text_problem(value: object, name: str) -> str | None:
    """Return why ``value`` is not usable text, or None."""
    if not isinstance(value, str):
        return f"field {name!r} is {_kind(value)}, not a string"
    if not value.strip():
        return f"field {name!r} is empty"
    if "\x00" in value:
        return f"field {name!r} contains a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return f"field {name!r} is not valid Unicode text (lone surrogate)"
    return None


def validate_record(record: object, columns: Columns) -> tuple[str | None, dict | None]:
    """Return (None, row) for a usable record, else (reason, None); the reason is never empty.

    Never raises: whatever a record holds costs that record only. An ``Unreadable`` record (bad
    bytes or JSON) is rejected with the reader's reason; a record that is not an object (a bare
    string, number, array, null) is rejected as such."""
    try:
        reason, row = _validate(record, columns)
    except Exception as err:  # noqa: BLE001 - a shape no check foresaw must still cost one record, not the run
        reason, row = f"unusable record: {type(err).__name__}: {err}", None
    return (reason or "unusable record", None) if row is None else (None, row)


def _validate(record: object, columns: Columns) -> tuple[str | None, dict | None]:
    if isinstance(record, Unreadable):
        return record.reason, None
    if not isinstance(record, dict):
        return f"row is {_kind(record)}, not an object", None
    if record.get(columns.question) is None:
        return f"missing field {columns.question!r}", None
    if problem := _text_problem(record[columns.question], columns.question):
        return problem, None
    answer, problem = _answer(record.get(columns.answer) if columns.answer else None, columns.answer)
    if problem:
        return problem, None
    qid = record.get(columns.id) if columns.id else None
    if qid is None:
        qid = question_id(record[columns.question])
    elif isinstance(qid, int) and not isinstance(qid, bool):
        qid = str(qid)
    elif not isinstance(qid, str):
        return f"field {columns.id!r} is {_kind(qid)}, not a string or integer", None
    elif problem := _text_problem(qid, columns.id):
        return problem, None
    extra = [record.get(name) for name in columns.extra]
    for name, value in zip(columns.extra, extra):
        if problem := _text_problem(value, name):
            return problem, None
    row = {"id": qid, "question": record[columns.question], "answer": answer}
    if columns.extra:
        row["extra"] = extra
    return None, row


def _answer(value: object, name: str) -> tuple[str, str | None]:
    """Return (gold answer text, None), or ("", why the value is no answer); absent or null is ""."""
    if value is None or value == "":
        return "", None
    if isinstance(value, float) and not math.isfinite(value):
        return "", f"field {name!r} is {value!r}, not a finite number"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value), None
    if not isinstance(value, str):
        return "", f"field {name!r} is {_kind(value)}, not a string or number"
    return value, _text_problem(value, name)


def load_questions(source: str, columns: Columns = Columns(), max_questions: int = 0,
                   check: Callable[[object, str | None, dict | None], str | None] | None = None) -> QuestionSet:
    """Read and validate a whole (small) question set; return its kept and rejected rows.

    ``check(record, reason, row)``, when given, sees every record with :func:`validate_record`'s verdict
    and returns the reason to reject it (or None); it may rewrite a kept ``row`` in place (evaluation
    parses gold answers this way). Duplicate ids are rejected after their first occurrence. Raises
    FileNotFoundError for a missing source and ValueError for an unreadable file or a question column
    no record has."""
    out = QuestionSet(source=source)
    seen: set[str] = set()
    for file, number, record in iter_source_records(source, columns, max_questions):
        reason, row = validate_record(record, columns)
        if check is not None:
            reason = check(record, reason, row)
        if reason is None and row["id"] in seen:
            reason = f"duplicate id: {row['id']!r}"
        if reason is not None:
            out.rejected.append(rejected_row(file, number, reason, record))
            continue
        seen.add(row["id"])
        out.rows.append(row)
    return out
