"""What one question record is, as read: the value a reader yields for a record it could not read
(``Unreadable``), so that a reader's error is never mistaken for data, and the JSONL line parser.
``upft_ray.io.sources`` reads files into these; ``upft_ray.io.questions`` validates them into question
rows; which fields hold what is ``upft_ray.config.columns``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

BOM = b"\xef\xbb\xbf"
RAW_CHARS = 2000  # how much of an unreadable record a rejected row keeps


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
