"""The sampling plan: the question source cut into chunks (one shard each), with duplicates found.

One streaming pass over the source counts the records, cuts them into chunks of
``rows_per_shard`` records (byte ranges for JSONL, row ranges for tables) and finds repeated ids
(64-bit hashes only, so 600K questions cost a few MB). ``RUN/sample/plan.json`` keeps the plan with
the config hash and each input file's size and mtime: a rerun of the same command reads the same
chunks and skips those whose shard is already written; a changed config or input is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from array import array
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from upft_ray.config.columns import Columns
from upft_ray.io.durable import remove_path
from upft_ray.io.manifests import read_json, write_json_atomic
from upft_ray.io.questions import validate_record
from upft_ray.io.sources import SourceFile, list_source_files, scan_records

log = logging.getLogger("upft.sample")


@dataclass
class Chunk:
    """A range of records in one file; its shard is ``shards/shard-{index:06d}.parquet``."""
    index: int
    file: str
    format: str
    start: int         # offset before the first record (byte for JSONL, row for tables)
    stop: int          # offset after the last record
    first_number: int  # line/row number at ``start`` (error messages name it)
    records: int
    duplicates: dict   # record number (as str) -> where the id was first seen

    def to_json(self) -> str:
        """Return the chunk as one JSON string (how it travels through Ray Data)."""
        return json.dumps(asdict(self))


@dataclass
class Plan:
    """All chunks of a sampling run, and what they were made from."""
    config_hash: str
    source: str
    files: list[dict]
    records: int
    chunks: list[Chunk]


def _id_hash(qid: str) -> int:
    return int.from_bytes(hashlib.blake2b(qid.encode("utf-8"), digest_size=8).digest(), "little")


def make_plan(source: str, columns: Columns, rows_per_shard: int, max_records: int, config_hash: str,
              progress_every_s: float = 10.0) -> Plan:
    """Scan ``source`` once and return its Plan (nothing is kept in memory but ids' hashes).

    Raises FileNotFoundError/ValueError naming a missing or unreadable file, or a question field
    that no record of a JSONL source has."""
    files = list_source_files(source)
    chunks: list[Chunk] = []
    hashes, positions, numbers = array("Q"), array("Q"), array("Q")
    count, has_question, t_last = 0, False, time.time()
    for file in files:
        start, first_number, in_chunk = 0, 1, 0
        for number, record, offset in scan_records(file, columns):
            has_question = has_question or (isinstance(record, dict) and columns.question in record)
            reason, row = validate_record(record, columns)
            if reason is None:
                hashes.append(_id_hash(row["id"]))
                positions.append(count)
                numbers.append(number)
            count += 1
            in_chunk += 1
            if in_chunk == rows_per_shard or count == max_records:
                chunks.append(Chunk(len(chunks), file.uri, file.format, start, offset, first_number, in_chunk, {}))
                start, first_number, in_chunk = offset, number + 1, 0
            if count == max_records:
                break
            if time.time() - t_last > progress_every_s:
                log.info("planning: %s records scanned", f"{count:,}")
                t_last = time.time()
        if in_chunk:
            chunks.append(Chunk(len(chunks), file.uri, file.format, start, offset, first_number, in_chunk, {}))
        if count == max_records:
            break
    if count and files[0].format == "jsonl" and not has_question:
        raise ValueError(f"{source}: no record has the field {columns.question!r} "
                         f"(set sample.question_field or sample.columns)")
    _mark_duplicates(chunks, np.frombuffer(hashes, dtype=np.uint64), np.frombuffer(positions, dtype=np.uint64),
                     np.frombuffer(numbers, dtype=np.uint64))
    return Plan(config_hash, source, [_file_record(f) for f in files], count, chunks)


def _mark_duplicates(chunks: list[Chunk], hashes: np.ndarray, positions: np.ndarray, numbers: np.ndarray) -> None:
    """Record in each chunk which of its records repeat an earlier id (the first one is kept)."""
    if not len(hashes):
        return
    _, first, inverse = np.unique(hashes, return_index=True, return_inverse=True)
    repeats = np.nonzero(first[inverse] != np.arange(len(hashes)))[0]
    chunk_starts = np.cumsum([0] + [c.records for c in chunks])
    for i in repeats:
        j = first[inverse[i]]
        where_first = chunks[int(np.searchsorted(chunk_starts, positions[j], side="right")) - 1]
        chunk = chunks[int(np.searchsorted(chunk_starts, positions[i], side="right")) - 1]
        unit = "line" if where_first.format == "jsonl" else "row"
        chunk.duplicates[str(int(numbers[i]))] = f"{where_first.file} {unit} {int(numbers[j])}"


def _file_record(file: SourceFile) -> dict:
    return {"uri": file.uri, "format": file.format, "size": file.size, "mtime": file.mtime}


def save_plan(plan: Plan, path: Path) -> None:
    """Write ``plan`` to ``path`` atomically."""
    write_json_atomic(path, {**asdict(plan), "chunks": [asdict(c) for c in plan.chunks]})


def load_plan(path: Path) -> Plan:
    """Read a plan written by ``save_plan``."""
    data = read_json(path)
    return Plan(data["config_hash"], data["source"], data["files"], data["records"],
                [Chunk(**c) for c in data["chunks"]])


def plan_for_run(sample_dir: Path, source: str, columns: Columns, rows_per_shard: int, max_records: int,
                 config_hash: str) -> tuple[Plan, bool]:
    """Return (plan, resumed): the saved plan of an earlier attempt of this same run, or a new one.

    A saved plan that no chunk was committed under (a start that failed before writing any shard:
    a wrong setting, a model that would not load) protects nothing, so another config or changed
    input replaces it rather than blocking the corrected command. Raises ValueError when
    ``sample_dir`` holds committed chunks of another config, or of input that changed since (their
    offsets would no longer be valid)."""
    path = sample_dir / "plan.json"
    if path.is_file():
        plan, mismatch = _saved_plan_mismatch(path, sample_dir, source, config_hash)
        if mismatch is None:
            return plan, True
        if any((sample_dir / "chunks").glob("chunk-*.json")):
            raise ValueError(mismatch)
        log.warning("replacing the plan of an earlier start that wrote no shard: %s", mismatch.split(";")[0])
        _clear_uncommitted(sample_dir)
    plan = make_plan(source, columns, rows_per_shard, max_records, config_hash)
    save_plan(plan, path)
    return plan, False


def _saved_plan_mismatch(path: Path, sample_dir: Path, source: str, config_hash: str) -> tuple[Plan | None, str | None]:
    """Return (saved plan, None) when it belongs to this run, else (plan or None, why it does not)."""
    try:
        plan = load_plan(path)
    except (ValueError, KeyError, TypeError) as err:
        return None, f"{path} cannot be read ({err}); use a new run_dir or delete {sample_dir}"
    if plan.config_hash != config_hash:
        return plan, (f"{sample_dir} holds samples of another config (hash {plan.config_hash}, now {config_hash}); "
                      f"use a new run_dir or delete {sample_dir}")
    now = [_file_record(f) for f in list_source_files(source)]
    if now != plan.files:
        changed = [f["uri"] for f in now if f not in plan.files] or [f["uri"] for f in plan.files]
        return plan, (f"input changed since {path} was made ({', '.join(changed[:3])}); "
                      f"use a new run_dir or delete {sample_dir}")
    return plan, None


def _clear_uncommitted(sample_dir: Path) -> None:
    """Remove what an attempt without committed chunks left (parts of chunks no summary vouches for, and the
    attempt records of the plan being replaced). Deletes are fenced (``upft_ray.io.durable.remove_path``)."""
    for sub in ("shards", "rejected", "chunks", "attempts"):
        for leftover in (sample_dir / sub).glob("*"):
            remove_path(leftover)
    for name in ("plan.json", "rejected.parquet", "manifest.json"):
        remove_path(sample_dir / name)
