"""What one question record is, as read: the fields that hold its question, answer and id, and
the value a reader yields for a record it could not read (``Unreadable``), so that a reader's error
is never mistaken for data. ``upft_ray.sources`` reads files into these; ``upft_ray.questions``
validates them into question rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

BOM = b"\xef\xbb\xbf"
RAW_CHARS = 2000  # how much of an unreadable record a rejected row keeps

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


@dataclass(frozen=True)
class Unreadable:
    """A record the reader could not turn into a value (bad bytes, bad JSON, an unreadable cell).

    Readers yield it in the record's place, so a reader's error is never mistaken for data (a JSON
    string record is data, and is rejected as such by the validation)."""

    reason: str
    raw: str  # what the record held, as text, cut at RAW_CHARS


def parse_jsonl_line(line: bytes) -> object:
    """Return the JSON value on one JSONL line (a leading UTF-8 BOM dropped), or Unreadable saying why not.

    Never raises: bad UTF-8, bad JSON and nesting too deep for the json module each cost this line only."""
    if line.startswith(BOM):
        line = line[len(BOM):]
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as err:
        return Unreadable(f"line is not valid UTF-8 (byte {err.start + 1})",
                          line[:RAW_CHARS].decode("utf-8", "backslashreplace"))
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        return Unreadable(f"invalid JSON: {err.msg} (column {err.colno})", text[:RAW_CHARS])
    except ValueError as err:  # an integer too long to convert (Python's 4,300-digit limit)
        return Unreadable(f"invalid JSON: {err}", text[:RAW_CHARS])
    except RecursionError:
        return Unreadable("invalid JSON: nested too deeply to read", text[:RAW_CHARS])
