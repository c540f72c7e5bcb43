"""Question files: find them (local paths, globs, s3://, gs://) and read their records in ranges.

Formats: JSONL (``.jsonl``/``.json``, one object per line), Parquet, CSV (a header row, every cell read
as text, quoted cells may span lines: GPQA's release), and HF ``datasets`` saved with ``save_to_disk`` (a
directory with ``state.json`` and Arrow stream files; local or mounted paths).
A source is ``bundled:NAME``, a file, a directory of such files, a glob, or an object-store URI;
pyarrow's filesystems do the I/O, so a cluster reads from shared storage with the same code.

Every record has a *number* (1-based line for JSONL, 1-based row for tables) for error messages,
and an *offset* after it (byte offset for JSONL, row index for tables): a range of offsets is what
the sampler's chunks name, so a worker reads its chunk without touching the rest of the file.
"""

from __future__ import annotations

import fnmatch
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from pyarrow import fs

from upft_ray.config.columns import Columns
from upft_ray.io.bundled_data import bundled_path
from upft_ray.io.records import BOM, RAW_CHARS, Unreadable, parse_jsonl_line

SUFFIX_FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".arrow": "arrow", ".csv": "csv"}
_TABLE_BATCH_ROWS = 8192


@dataclass(frozen=True)
class SourceFile:
    """One readable question file."""
    uri: str     # path or URI as pyarrow opens it
    format: str  # jsonl | parquet | arrow | csv
    size: int
    mtime: str   # for noticing a file that changed under a resumed run


def source_name(source: str) -> str:
    """Return a short name for a question source (``arith-eval`` for ``bundled:arith-eval``)."""
    if source.startswith("bundled:"):
        return source.split(":", 1)[1]
    base = source.rstrip("/").rsplit("/", 1)[-1]
    return base.split(".")[0] if "." in base else base


def _filesystem(uri: str):
    """Return (pyarrow filesystem, path inside it) for a local path or an object-store URI."""
    if "://" not in uri:
        return fs.LocalFileSystem(), str(Path(uri).expanduser().resolve())
    return fs.FileSystem.from_uri(uri)


def _join(uri: str, path: str) -> str:
    """Return the URI of ``path`` (a filesystem path) on the same filesystem as ``uri``."""
    if "://" not in uri:
        return path
    scheme = uri.split("://", 1)[0]
    return f"{scheme}://{path}"


def _file(uri: str, info, fmt: str | None = None) -> SourceFile:
    fmt = fmt or SUFFIX_FORMATS.get(Path(info.path).suffix)
    if fmt is None:
        raise ValueError(f"{uri}: unsupported question file type (use .jsonl, .parquet, .csv, or an HF "
                         "save_to_disk dir)")
    return SourceFile(_join(uri, info.path), fmt, int(info.size or 0), str(info.mtime))


def list_source_files(source: str) -> list[SourceFile]:
    """Return the files a source names, in a stable order.

    Raises FileNotFoundError naming a missing path, ValueError for a directory with no question
    files, an HF DatasetDict root (name a split), or an unsupported file type."""
    if source.startswith("bundled:"):
        source = str(bundled_path(source.split(":", 1)[1]))
    filesystem, path = _filesystem(source)
    if any(ch in path for ch in "*?["):
        parent, pattern = path.rsplit("/", 1)
        infos = [i for i in filesystem.get_file_info(fs.FileSelector(parent, allow_not_found=True))
                 if i.type == fs.FileType.File and fnmatch.fnmatch(i.base_name, pattern)]
        if not infos:
            raise FileNotFoundError(f"question files not found: no file matches {source}")
        return [_file(source, i) for i in sorted(infos, key=lambda i: i.path)]
    info = filesystem.get_file_info(path)
    if info.type == fs.FileType.NotFound:
        raise FileNotFoundError(f"question file not found: {source}")
    if info.type == fs.FileType.File:
        return [_file(source, info)]
    return _directory_files(filesystem, source, path)


def _directory_files(filesystem, source: str, path: str) -> list[SourceFile]:
    names = {i.base_name: i for i in filesystem.get_file_info(fs.FileSelector(path))}
    if "dataset_dict.json" in names:
        splits = sorted(n for n, i in names.items() if i.type == fs.FileType.Directory)
        raise ValueError(f"{source} is an HF DatasetDict with splits {splits}: name one, e.g. {source.rstrip('/')}/"
                         f"{splits[0] if splits else 'train'}")
    if "state.json" in names:  # datasets.Dataset.save_to_disk
        with filesystem.open_input_stream(f"{path}/state.json") as fh:
            state = json.loads(fh.read())
        files = [f"{path}/{entry['filename']}" for entry in state.get("_data_files", [])]
        return [_file(source, filesystem.get_file_info(f), "arrow") for f in files]
    found = [i for i in names.values() if i.type == fs.FileType.File and Path(i.path).suffix in SUFFIX_FORMATS
             and not i.base_name.startswith((".", "_"))]
    if not found:
        raise ValueError(f"{source}: directory holds no .jsonl, .parquet or .csv files")
    return [_file(source, i) for i in sorted(found, key=lambda i: i.path)]


def _check_columns(file: SourceFile, schema_names: list[str], columns: Columns) -> list[str]:
    """Return the mapped columns a table file has; raise ValueError if it lacks the question column."""
    if columns.question not in schema_names:
        raise ValueError(f"{file.uri}: no column {columns.question!r} (columns: {schema_names}); "
                         f"set sample.question_field or sample.columns")
    return [c for c in columns.names() if c in schema_names]


def _open_arrow(file: SourceFile):
    if "://" in file.uri:
        raise ValueError(f"{file.uri}: HF save_to_disk data is read from a local or mounted path; "
                         "for object stores convert it to Parquet")
    try:
        return pa.ipc.open_stream(pa.memory_map(file.uri)).read_all()  # zero-copy: pages load on touch
    except pa.ArrowInvalid as err:
        raise ValueError(f"cannot read Arrow file {file.uri}: {err}") from err


def _open_csv(file: SourceFile):
    """Return a CSV file as a table of text columns (types not guessed: ``007`` stays ``007``)."""
    filesystem, path = _filesystem(file.uri)
    parse = pacsv.ParseOptions(newlines_in_values=True)  # quoted cells span lines (GPQA's questions do)
    try:
        with filesystem.open_input_stream(path) as fh:
            names = pacsv.open_csv(fh, parse_options=parse).schema.names
        convert = pacsv.ConvertOptions(column_types={name: pa.string() for name in names},
                                       strings_can_be_null=False)
        with filesystem.open_input_stream(path) as fh:
            return pacsv.read_csv(fh, parse_options=parse, convert_options=convert)
    except (pa.ArrowInvalid, OSError) as err:
        raise ValueError(f"cannot read CSV file {file.uri}: {err}") from err


def _open_whole(file: SourceFile):
    """Return an Arrow or CSV file as one table (read whole, once per chunk: no row groups to seek to; Arrow is
    memory-mapped, a CSV parsed again, so a large CSV set is better converted once, e.g. by ``upft data prepare``)."""
    return _open_arrow(file) if file.format == "arrow" else _open_csv(file)


def table_columns(file: SourceFile) -> list[str] | None:
    """Return the column names of a table file (Parquet, Arrow, CSV), or None for JSONL (no schema).

    Raises ValueError naming the file when it cannot be read."""
    if file.format == "jsonl":
        return None
    if file.format == "parquet":
        return _open_parquet(file).schema_arrow.names
    return _open_whole(file).schema.names


def _open_parquet(file: SourceFile):
    filesystem, path = _filesystem(file.uri)
    try:
        return pq.ParquetFile(filesystem.open_input_file(path))
    except (pa.ArrowInvalid, OSError) as err:
        raise ValueError(f"cannot read Parquet file {file.uri}: {err}") from err


def check_readable(file: SourceFile, columns: Columns) -> bool:
    """Open ``file`` and read its first bytes (JSONL) or its schema (tables), nothing more; return
    whether it may hold records (False for an empty file or table).

    Raises ValueError naming the file when it cannot be opened or read, or a table lacks the
    question column (the checks a run would otherwise meet on a worker)."""
    if file.format == "jsonl":
        filesystem, path = _filesystem(file.uri)
        try:
            with filesystem.open_input_stream(path) as fh:
                return bool(fh.read(1))
        except OSError as err:
            raise ValueError(f"cannot read {file.uri}: {err}") from err
    whole = file.format != "parquet"
    table = _open_whole(file) if whole else _open_parquet(file)
    schema = table.schema if whole else table.schema_arrow
    _check_columns(file, schema.names, columns)
    return (table.num_rows if whole else table.metadata.num_rows) > 0


def _table_rows(file: SourceFile, columns: Columns, start: int, stop: int | None) -> Iterator[tuple[int, object, int]]:
    """Yield (row number, record, offset after it) for rows [start, stop) of a Parquet/Arrow/CSV file."""
    if file.format != "parquet":  # arrow, csv
        table = _open_whole(file)
        names = _check_columns(file, table.schema.names, columns)
        table = table.select(names).slice(start, None if stop is None else stop - start)
        batches = table.to_batches(max_chunksize=_TABLE_BATCH_ROWS)
    else:
        parquet = _open_parquet(file)
        names = _check_columns(file, parquet.schema_arrow.names, columns)
        batches = _parquet_batches(parquet, names, start, stop)
    row = start
    for batch in batches:
        try:
            records = batch.to_pylist()
        except Exception:  # noqa: BLE001 - e.g. a string cell of bad UTF-8: read cell by cell, losing that row only
            records = [_table_record(batch, i) for i in range(batch.num_rows)]
        for record in records:
            yield row + 1, record, row + 1
            row += 1


def _table_record(batch, i: int) -> object:
    """Return row ``i`` of ``batch`` as a dict, or Unreadable naming the first cell that cannot be read."""
    record = {}
    for name, column in zip(batch.schema.names, batch.columns):
        try:
            record[name] = column[i].as_py()
        except UnicodeDecodeError:
            return Unreadable(f"field {name!r} is not valid UTF-8", _cell_bytes(column, i))
        except Exception as err:  # noqa: BLE001 - any unconvertible cell costs its row only
            return Unreadable(f"field {name!r} cannot be read: {type(err).__name__}: {err}", "")
    return record


def _cell_bytes(column, i: int) -> str:
    """Return a string cell's bytes as text (bad bytes as escapes), for the rejected row."""
    try:
        value = column.view(pa.large_binary() if pa.types.is_large_string(column.type) else pa.binary())[i].as_py()
        return value[:RAW_CHARS].decode("utf-8", "backslashreplace")
    except Exception:  # noqa: BLE001 - only for display
        return ""


def _parquet_batches(parquet, names: list[str], start: int, stop: int | None):
    """Yield record batches of rows [start, stop), reading only the row groups that hold them."""
    meta = parquet.metadata
    first = 0
    for group in range(meta.num_row_groups):
        rows = meta.row_group(group).num_rows
        lo, hi = max(start, first), min(stop if stop is not None else first + rows, first + rows)
        if lo < hi:
            table = parquet.read_row_group(group, columns=names).slice(lo - first, hi - lo)
            yield from table.to_batches(max_chunksize=_TABLE_BATCH_ROWS)
        first += rows
        if stop is not None and first >= stop:
            return


def _jsonl_lines(file: SourceFile, start: int, stop: int | None, first_number: int) -> Iterator[tuple[int, object, int]]:
    """Yield (line number, record or Unreadable, byte offset after the line) for bytes [start, stop)."""
    filesystem, path = _filesystem(file.uri)
    raw = filesystem.open_input_file(path)
    raw.seek(start)
    number, offset = first_number - 1, start
    with io.BufferedReader(raw, buffer_size=1 << 20) as fh:
        for line in fh:
            number += 1
            offset += len(line)
            if not line.removeprefix(BOM).strip():
                continue
            record = parse_jsonl_line(line)
            yield number, record, offset
            if stop is not None and offset >= stop:
                return


def scan_records(file: SourceFile, columns: Columns, start: int = 0, stop: int | None = None,
                 first_number: int = 1) -> Iterator[tuple[int, object, int]]:
    """Yield (number, record, offset after it) for the records of ``file`` in offsets [start, stop).

    A record is a dict, anything else JSON holds, or an Unreadable (a bad line or cell). Raises
    ValueError naming the file when it cannot be read or lacks the question column."""
    if file.format == "jsonl":
        return _jsonl_lines(file, start, stop, first_number)
    return _table_rows(file, columns, start, stop)


def iter_source_records(source: str, columns: Columns, max_records: int = 0) -> Iterator[tuple[str, int, object]]:
    """Yield (file, number, record) for every record of a source, at most ``max_records`` (0 = all).

    Raises ValueError when no record of a JSONL source has the question field (a wrong mapping)."""
    count, has_question = 0, False
    for file in list_source_files(source):
        for number, record, _ in scan_records(file, columns):
            has_question = has_question or (isinstance(record, dict) and columns.question in record)
            yield file.uri, number, record
            count += 1
            if max_records and count >= max_records:
                break
        if max_records and count >= max_records:
            break
    if count and not has_question:
        raise ValueError(f"{source}: no record has the field {columns.question!r}; set the question field")
