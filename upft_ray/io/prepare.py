"""``upft data prepare``: read a public release in its own layout and write the question file we use.

One streaming pass (OpenMathInstruct-2's 14M rows never sit in memory; only a 64-bit hash pair per
distinct id does): every record is validated (``upft_ray.io.questions.validate_record``), mapped to the
consumer's columns (``upft_ray.io.public_sets``), de-duplicated by id, and written to ``DIR/NAME.jsonl``;
a record that cannot be used goes to ``DIR/NAME.rejected.jsonl`` with its file, row and reason.
``DIR/NAME.manifest.json`` records what was read and how, the counts (read = written + rejected +
duplicates, checked), the paper's size and whether ours matches, and what was assumed. Files land through
a temporary name, so a failed run leaves no half-written file.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import islice
from pathlib import Path

from pyarrow import fs

from upft_ray.config.columns import Columns
from upft_ray.io.durable import commit_file, make_dirs, temp_path
from upft_ray.io.manifests import package_versions, write_json_atomic
from upft_ray.io.public_sets import PublicSet, public_set
from upft_ray.io.questions import rejected_row, validate_record
from upft_ray.io.records import Unreadable
from upft_ray.io.sources import SourceFile, list_source_files, scan_records, table_columns

log = logging.getLogger("upft.data")
_SCHEMA_RECORDS = 1000  # JSONL has no schema: its columns are the keys of its first records
_LFS_POINTER = "version https://git-lfs.github.com/spec/"  # a clone without git-lfs holds these


@dataclass
class _Tally:
    """What one pass saw: the counts, and per id seen the hashes of its question and answer."""
    read: int = 0
    written: int = 0
    duplicates: int = 0
    duplicates_other_answer: int = 0
    rejected: Counter = field(default_factory=Counter)
    seen: dict = field(default_factory=dict)


def _listing(source: str) -> dict[str, fs.FileInfo] | None:
    """Return {name: info} of the entries of directory ``source`` (local or URI), or None if no directory."""
    filesystem, path = fs.FileSystem.from_uri(source) if "://" in source else \
        (fs.LocalFileSystem(), str(Path(source).expanduser().resolve()))
    if any(ch in path for ch in "*?[") or filesystem.get_file_info(path).type != fs.FileType.Directory:
        return None
    return {i.base_name: i for i in filesystem.get_file_info(fs.FileSelector(path))}


def resolve_release(source: str, layout: PublicSet, split: str | None = None) -> tuple[list[SourceFile], str]:
    """Return (the files to read, how they were found) for a release at ``source``.

    ``source`` is a file, a glob, an HF ``save_to_disk`` directory, an HF ``DatasetDict`` directory (the
    split is ``split`` or the set's usual one), or a download directory holding the release's own file
    (``layout.files``; else every question file in it). Raises FileNotFoundError for a missing path and
    ValueError for a DatasetDict without the split."""
    names = _listing(source)
    base = source.rstrip("/")
    if names is None:
        return list_source_files(source), "file" if not any(ch in source for ch in "*?[") else "glob"
    if "dataset_dict.json" in names:
        split = split or layout.split
        splits = sorted(n for n, i in names.items() if i.type == fs.FileType.Directory)
        if split not in splits:
            raise ValueError(f"{source}: HF DatasetDict has no split {split!r} (splits: {splits}); "
                             "name one with --split")
        return list_source_files(f"{base}/{split}"), f"HF DatasetDict (save_to_disk), split {split!r}"
    if "state.json" in names:
        return list_source_files(source), "HF Dataset (save_to_disk)"
    for pattern in layout.files:
        try:
            return list_source_files(f"{base}/{pattern}"), f"release file {pattern} in the directory"
        except FileNotFoundError:
            continue
    return list_source_files(source), "every question file in the directory"


def _columns_found(file: SourceFile, columns: Columns) -> list[str] | None:
    """Return the columns ``file`` has (JSONL: the keys of its first records; None if it has no object)."""
    names = table_columns(file)
    if names is not None:
        return names
    keys: dict[str, None] = {}
    for number, record, _ in islice(scan_records(file, columns), _SCHEMA_RECORDS):
        if number == 1 and isinstance(record, Unreadable) and record.raw.startswith(_LFS_POINTER):
            raise ValueError(f"{file.uri} is a Git LFS pointer, not the data: fetch it (git lfs pull)")
        keys.update(dict.fromkeys(record) if isinstance(record, dict) else {})
    return list(keys) or None


def check_columns(file: SourceFile, layout: PublicSet, required: list[str], columns: Columns) -> None:
    """Raise ValueError naming ``file``, the missing column and the columns found, if it lacks a required one."""
    found = _columns_found(file, columns)
    missing = [name for name in required if found is not None and name not in found]
    if missing:
        raise ValueError(f"{file.uri}: no column {missing[0]!r} (a {layout.name} release has {required}; "
                         f"columns found: {found})")


def _required(layout: PublicSet, gold: str) -> list[str]:
    """Return the release columns every file must have."""
    ids = [layout.id_source] if layout.id_source and not layout.id_fallback else []
    return [layout.question[0], gold, *ids, *layout.required_extra]


def _absent(record: dict, name: str) -> str:
    """Return why a record's field ``name`` holds no answer (missing, null or blank)."""
    if name not in record:
        return f"missing field {name!r}"
    return f"field {name!r} is null" if record[name] is None else f"field {name!r} is empty"


def map_record(layout: PublicSet, gold: str, record: object, position: int) -> tuple[str | None, dict | None]:
    """Return (None, the row we write) for a usable release record, else (why not, None). Never raises.

    ``position`` is the record's 0-based place in the release (the id of a set whose ids are positions)."""
    columns = Columns(layout.question[0], gold, layout.id_source, layout.required_extra)
    reason, row = validate_record(record, columns)
    if reason is not None:
        return reason, None
    if not row["answer"]:
        return _absent(record, gold), None
    if layout.row_problem is not None and (why := layout.row_problem(row["answer"])):
        return why, None
    has_id = bool(layout.id_source) and record.get(layout.id_source) is not None
    if layout.id_source and not has_id and not layout.id_fallback:
        return _absent(record, layout.id_source), None
    qid = position if not has_id and layout.id_fallback == "index" else row["id"]
    out = {layout.question[1]: row["question"], layout.answer_out: row["answer"], layout.id_out: qid}
    out.update(zip(layout.required_extra, row.get("extra", ())))
    out.update((name, record[name]) for name in layout.keep if _keepable(record.get(name)))
    return None, out


def _keepable(value: object) -> bool:
    """Return whether a metadata value can be written as UTF-8 JSON (not null, no lone surrogate)."""
    if value is None:
        return False
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
        return True
    except (TypeError, ValueError, UnicodeEncodeError):
        return False


def _dedupe(tally: _Tally, row: dict, layout: PublicSet) -> str | None:
    """Return "" for a repeat of a row already written, a reason for an id already used by another
    question, or None for a new id (remembered)."""
    qid = row[layout.id_out]
    key = (hash(row[layout.question[1]]), hash(row[layout.answer_out]))
    first = tally.seen.setdefault(qid, key)
    if first is key:  # this very tuple went in: the id is new
        return None
    if first[0] != key[0]:
        return f"duplicate id with a different question (the first is kept): {qid!r}"
    tally.duplicates_other_answer += first[1] != key[1]
    return ""


def _reason_kind(reason: str) -> str:
    """Return a rejection reason without its particulars (quoted id, byte or column numbers), for counting."""
    return re.sub(r" \(.*\)$", "", reason.split(": ", 1)[0] if reason.startswith("duplicate id") else reason)


def _stream(layout: PublicSet, gold: str, files: list[SourceFile], out_fh, rejected_fh) -> _Tally:
    """Read every record of ``files``, writing kept rows to ``out_fh`` and rejected ones to ``rejected_fh``."""
    read_columns = Columns(layout.question[0], gold, layout.id_source, (*layout.required_extra, *layout.keep))
    tally = _Tally()
    for file in files:
        for number, record, _ in scan_records(file, read_columns):
            reason, row = map_record(layout, gold, record, tally.read)
            tally.read += 1
            if reason is None and (reason := _dedupe(tally, row, layout)) == "":
                tally.duplicates += 1
                continue
            if reason is not None:
                tally.rejected[_reason_kind(reason)] += 1
                rejected_fh.write(json.dumps(rejected_row(file.uri, number, reason, record)) + "\n")
                continue
            out_fh.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
            tally.written += 1
    return tally


def _write(layout: PublicSet, gold: str, files: list[SourceFile], out: Path, rejected: Path) -> _Tally:
    """Stream ``files`` into ``out`` and ``rejected`` through temporary names; return what the pass saw."""
    make_dirs(out.parent)
    tmp_out, tmp_rejected = temp_path(out), temp_path(rejected)
    try:
        with tmp_out.open("w", encoding="utf-8") as out_fh, tmp_rejected.open("w", encoding="utf-8") as rej_fh:
            tally = _stream(layout, gold, files, out_fh, rej_fh)
        commit_file(tmp_rejected, rejected)
        commit_file(tmp_out, out)
    finally:  # a pass that failed leaves no half-written file
        tmp_out.unlink(missing_ok=True)
        tmp_rejected.unlink(missing_ok=True)
    return tally


def _gold_column(layout: PublicSet, gold: str | None) -> str:
    """Return the release column the gold answer comes from; raises ValueError for one the set does not offer."""
    if gold is None:
        return layout.answers[0]
    if gold not in layout.answers:
        raise ValueError(f"--gold {gold!r}: {layout.name} takes its gold from {' or '.join(layout.answers)}")
    return gold


def prepare_public_set(name: str, source: str, out_dir: Path, split: str | None = None,
                       gold: str | None = None) -> dict:
    """Write ``out_dir/NAME.jsonl``, ``NAME.rejected.jsonl`` and ``NAME.manifest.json`` from the release at
    ``source``; return the manifest.

    Raises KeyError for an unknown set, FileNotFoundError for a missing source, and ValueError for a file
    that cannot be read or lacks a required column (naming the file, the column and the columns found)."""
    layout = public_set(name)
    gold_column = _gold_column(layout, gold)
    files, how = resolve_release(str(source), layout, split)
    if split and "DatasetDict" not in how:
        log.warning("%s: --split %s ignored: %s is not an HF DatasetDict directory", name, split, source)
    for file in files:
        check_columns(file, layout, _required(layout, gold_column), Columns(layout.question[0], gold_column, ""))
    out_dir = Path(out_dir)
    out, rejected = out_dir / f"{name}.jsonl", out_dir / f"{name}.rejected.jsonl"
    for file in files:
        if "://" not in file.uri and Path(file.uri).resolve() in (out.resolve(), rejected.resolve()):
            raise ValueError(f"{file.uri}: writing {out.name} to {out_dir} would replace the release; "
                             "choose another --out")
    tally = _write(layout, gold_column, files, out, rejected)
    manifest = _manifest(layout, str(source), files, how, gold_column, tally, out, rejected)
    write_json_atomic(out_dir / f"{name}.manifest.json", manifest)
    _log_summary(layout, manifest)
    return manifest


def matches_paper(layout: PublicSet, rows: int) -> bool:
    """Return whether ``rows`` is the paper's size (within 5% where the paper rounds it)."""
    if layout.approximate:
        return abs(rows - layout.expected_rows) <= 0.05 * layout.expected_rows
    return rows == layout.expected_rows


def _manifest(layout: PublicSet, source: str, files: list[SourceFile], how: str, gold: str, tally: _Tally,
              out: Path, rejected: Path) -> dict:
    """Return the manifest of one preparation; raises AssertionError if the counts do not add up."""
    rows_rejected = sum(tally.rejected.values())
    assert tally.read == tally.written + rows_rejected + tally.duplicates, "rows read != written + rejected + dups"
    id_from = layout.id_source or "the question's hash"
    if layout.id_source and layout.id_fallback:
        id_from += " (else " + ("the row's position" if layout.id_fallback == "index" else "the question's hash") + ")"
    return {
        "name": layout.name, "title": layout.title, "kind": layout.kind, "source": source, "source_url": layout.url,
        "layout_read": {"how": how, "formats": sorted({f.format for f in files}), "files": [f.uri for f in files]},
        "columns": {layout.question[1]: layout.question[0], layout.answer_out: gold, layout.id_out: id_from,
                    **{c: c for c in layout.required_extra}, "kept_when_present": list(layout.keep)},
        "output": str(out), "rejected_file": str(rejected),
        "consumer": layout.consumer.replace("DIR", str(out.parent)),
        "rows_read": tally.read, "rows_written": tally.written, "rows_rejected": rows_rejected,
        "duplicates": tally.duplicates, "duplicates_with_other_answer": tally.duplicates_other_answer,
        "rejected_by_reason": dict(tally.rejected.most_common()),
        "counts": "rows_read = rows_written + rows_rejected + duplicates",
        "expected_rows": layout.expected_rows, "expected_approximate": layout.approximate,
        "matches_paper": matches_paper(layout, tally.written), "gold": gold,
        "assumptions": list(layout.assumptions), "notes": layout.notes,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "versions": package_versions(),
    }


def _log_summary(layout: PublicSet, m: dict) -> None:
    """Log one line per set, and a warning when its size is not the paper's."""
    log.info("%s: %s rows read, %s written, %s rejected, %s duplicates -> %s", layout.name, f"{m['rows_read']:,}",
             f"{m['rows_written']:,}", f"{m['rows_rejected']:,}", f"{m['duplicates']:,}", m["output"])
    if m["rows_rejected"]:
        log.warning("%s: %s rows rejected (reasons in %s)", layout.name, f"{m['rows_rejected']:,}", m["rejected_file"])
    if not m["matches_paper"]:
        size = ("about " if layout.approximate else "") + f"{layout.expected_rows:,}"
        log.warning("%s: %s rows written, the paper reports %s", layout.name, f"{m['rows_written']:,}", size)
    for assumption in layout.assumptions:
        log.warning("%s: assumed: %s", layout.name, assumption)
