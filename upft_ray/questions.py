"""Question sets: read JSONL/Parquet/bundled sets into validated rows, rejecting bad rows with reasons.

A valid row is ``{"id": str, "question": str, "answer": str}``. A row that cannot be used (missing or
empty question, non-string field, bad JSON line) is returned separately with its line number and
the reason, never dropped silently: rows read = rows kept + rows rejected.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from upft_ray.bundled_data import bundled_path


@dataclass
class QuestionSet:
    """The rows of one question file: ``rows`` kept, ``rejected`` with a reason each."""

    source: str
    rows: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)

    @property
    def num_read(self) -> int:
        """Rows read from the file (kept + rejected)."""
        return len(self.rows) + len(self.rejected)


def resolve_source(source: str) -> Path:
    """Return the file a question source names (``bundled:NAME`` or a path); raises if missing."""
    if source.startswith("bundled:"):
        return bundled_path(source.split(":", 1)[1])
    path = Path(source).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"question file not found: {path}")
    return path


def source_name(source: str) -> str:
    """Return a short name for a question source (``arith-eval`` for ``bundled:arith-eval``)."""
    if source.startswith("bundled:"):
        return source.split(":", 1)[1]
    return Path(source).stem


def question_id(question: str) -> str:
    """Return a stable id derived from the question text (for sets without an id column)."""
    return "q-" + hashlib.sha1(question.encode("utf-8")).hexdigest()[:16]


def _raw_records(path: Path) -> list[tuple[int, object]]:
    """Return (1-based line/row number, record or an error string) for every row in ``path``."""
    if path.suffix == ".jsonl" or path.suffix == ".json":
        records = []
        with path.open(encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    records.append((number, json.loads(line)))
                except json.JSONDecodeError as err:
                    records.append((number, f"invalid JSON: {err.msg}"))
        return records
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as err:  # pyarrow raises several types for a damaged file
            raise ValueError(f"cannot read Parquet file {path}: {err}") from err
        return list(enumerate(table.to_pylist(), 1))
    raise ValueError(f"{path}: unsupported question file type {path.suffix!r} (use .jsonl or .parquet)")


def load_questions(
    source: str,
    question_field: str = "question",
    answer_field: str = "answer",
    id_field: str = "id",
    max_questions: int = 0,
    extra_fields: tuple[str, ...] = (),
) -> QuestionSet:
    """Read and validate a question set; return its kept and rejected rows.

    ``extra_fields`` (e.g. a multiple-choice set's wrong options) must be non-empty strings; their
    values are kept, in order, as the row's ``extra`` list.

    Raises FileNotFoundError for a missing file and ValueError when ``question_field`` is absent
    from every row (a wrong column mapping, not bad rows)."""
    path = resolve_source(source)
    records = _raw_records(path)
    if max_questions:
        records = records[:max_questions]
    dict_rows = [r for _, r in records if isinstance(r, dict)]
    if dict_rows and not any(question_field in r for r in dict_rows):
        columns = sorted({k for r in dict_rows for k in r})
        raise ValueError(f"{path}: no column {question_field!r} (columns: {columns}); set question_field")
    out = QuestionSet(source=str(path))
    seen: set[str] = set()
    for number, record in records:
        reason, row = _validate(record, question_field, answer_field, id_field, extra_fields)
        if reason is None and row["id"] in seen:
            reason = f"duplicate id {row['id']!r}"
        if reason is not None:
            out.rejected.append({"source": str(path), "line": number, "reason": reason,
                                 "raw": json.dumps(record, default=str)[:2000]})
            continue
        seen.add(row["id"])
        out.rows.append(row)
    return out


def _validate(record: object, question_field: str, answer_field: str, id_field: str,
              extra_fields: tuple[str, ...] = ()):
    """Return (None, row) for a usable record, else (reason, None)."""
    if isinstance(record, str):
        return record, None
    if not isinstance(record, dict):
        return f"row is {type(record).__name__}, not an object", None
    question = record.get(question_field)
    if question is None:
        return f"missing field {question_field!r}", None
    if not isinstance(question, str):
        return f"field {question_field!r} is {type(question).__name__}, not a string", None
    if not question.strip():
        return f"field {question_field!r} is empty", None
    answer = record.get(answer_field, "")
    if answer is None:
        answer = ""
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        answer = str(answer)
    if not isinstance(answer, str):
        return f"field {answer_field!r} is {type(answer).__name__}, not a string or number", None
    qid = record.get(id_field)
    if qid is None:
        qid = question_id(question)
    elif isinstance(qid, (int, str)) and not isinstance(qid, bool):
        qid = str(qid)
    else:
        return f"field {id_field!r} is {type(qid).__name__}, not a string or integer", None
    extra = [record.get(name) for name in extra_fields]
    for name, value in zip(extra_fields, extra):
        if not isinstance(value, str) or not value.strip():
            return f"field {name!r} is missing or not a non-empty string", None
    row = {"id": qid, "question": question, "answer": answer}
    if extra_fields:
        row["extra"] = extra
    return None, row
