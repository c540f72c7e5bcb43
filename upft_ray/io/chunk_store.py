"""The files of a chunked stage (sampling, evaluation): committed units, their attempts, first commit wins.

A stage's work is cut into chunks (``plan.json``); each chunk is committed whole, or, when it keeps
killing engines, as record ranges (``upft_ray.execution.isolation``). A unit's key is the chunk
index (``000012``) or the index and a record range (``000012.r000000-000512``). Under ``out_dir``:

- ``shards/shard-KEY.parquet``: the unit's rows (none when every record was rejected);
- ``rejected/chunk-KEY.parquet``: its rejected records, with reasons (none when there are none);
- ``chunks/chunk-KEY.json``: its summary, the commit mark, written last;
- ``attempts/chunk-KEY/ATTEMPT.json``: one file per attempt at the unit (where it ran, when, how it ended).

Committing (:meth:`ChunkStore.commit`): the unit's files are first committed under hidden names that
carry the attempt (``shards/.shard-KEY.ATTEMPT.pending``), then the summary is created only if none
exists (a hard link: the first commit wins; a speculative duplicate or a stale attempt that loses
removes its files, and nothing of it lands), then the winner renames its files to their visible
names. A crash between the last two steps is finished by :meth:`ChunkStore.roll_forward`, which a
stage runs before it reads its units. Readers of ``shards/`` never see a hidden or pending file.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from upft_ray.io.durable import (
    commit_file,
    commit_new_file,
    fsync_path,
    make_dirs,
    remove_path,
    temp_path,
    write_parquet_durably,
)
from upft_ray.io.manifests import finite_json, read_json, write_json_atomic

_PENDING = re.compile(r"^\.(?P<name>.+)\.(?P<attempt>[\w-]+)\.pending$")  # attempt ids have no dots
SUBDIRS = ("shards", "rejected", "chunks")


def unit_key(chunk: int, lo: int | None = None, hi: int | None = None) -> str:
    """Return the key of a whole chunk, or of records [lo, hi) of it."""
    return f"{chunk:06d}" if lo is None else f"{chunk:06d}.r{lo:06d}-{hi:06d}"


def parse_key(key: str) -> tuple[int, int | None, int | None]:
    """Return (chunk, lo, hi) of a unit key (lo and hi None for a whole chunk)."""
    chunk, _, span = key.partition(".r")
    if not span:
        return int(chunk), None, None
    lo, hi = span.split("-")
    return int(chunk), int(lo), int(hi)


def new_attempt_id() -> str:
    """Return an id unique to one attempt at a unit (host, pid and a random part): letters, digits, ``_`` and
    ``-`` only, so a pending file's name splits back into its target and its attempt (hosts have dots)."""
    host = re.sub(r"[^\w-]", "-", socket.gethostname())[:24]
    return f"{host}-{os.getpid()}-{secrets.token_hex(4)}"


class ChunkStore:
    """The committed units and attempts of one chunked stage's output directory."""

    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)

    def summary_path(self, key: str) -> Path:
        return self.out_dir / "chunks" / f"chunk-{key}.json"

    def shard_path(self, key: str) -> Path:
        return self.out_dir / "shards" / f"shard-{key}.parquet"

    def rejected_path(self, key: str) -> Path:
        return self.out_dir / "rejected" / f"chunk-{key}.parquet"

    def committed(self, key: str) -> bool:
        """Return True once the unit ``key`` is committed (its summary exists)."""
        return self.summary_path(key).is_file()

    def read_summary(self, key: str) -> dict:
        """Return the summary of a committed unit."""
        return read_json(self.summary_path(key))

    def summaries(self, chunk: int | None = None) -> dict[str, dict]:
        """Return {key: summary} of every committed unit (of ``chunk`` only, when given)."""
        pattern = "chunk-*.json" if chunk is None else f"chunk-{chunk:06d}*.json"
        out = {}
        for path in sorted((self.out_dir / "chunks").glob(pattern)):
            out[path.stem.removeprefix("chunk-")] = json.loads(path.read_text())
        return out

    def commit(self, key: str, summary: dict, rows: pa.Table | None, rejected: pa.Table | None,
               attempt: str) -> bool:
        """Commit unit ``key`` (its rows, its rejected records, then its summary); return False when another
        attempt committed it first (nothing of this one lands). Raises ``Fenced`` in a fenced attempt."""
        files = {}
        for target, table in ((self.shard_path(key), rows), (self.rejected_path(key), rejected)):
            if table is not None and table.num_rows:
                pending = target.with_name(f".{target.name}.{attempt}.pending")
                write_parquet_durably(table, pending)
                files[target.name] = pending
        tmp = temp_path(self.summary_path(key))
        tmp.write_text(json.dumps(finite_json({**summary, "attempt": attempt, "files": sorted(files)}),
                                  allow_nan=False))
        if not commit_new_file(tmp, self.summary_path(key)):
            for pending in files.values():
                remove_path(pending)
            return False
        for name, pending in files.items():
            os.replace(pending, pending.with_name(name))
            fsync_path(pending.parent)
        return True

    def roll_forward(self) -> int:
        """Finish commits cut short between the summary and the renames, and delete pending files of attempts
        that did not commit; return how many files were renamed. Call while no writer of the stage runs."""
        renamed = 0
        for sub in ("shards", "rejected"):
            for pending in (self.out_dir / sub).glob(".*.pending"):
                match = _PENDING.match(pending.name)
                key = match and re.sub(r"^(shard|chunk)-", "", match["name"].removesuffix(".parquet"))
                summary = self.summary_path(key) if key else None
                if summary is not None and summary.is_file() and read_json(summary).get("attempt") == match["attempt"]:
                    os.replace(pending, pending.with_name(match["name"]))
                    fsync_path(pending.parent)
                    renamed += 1
                else:
                    remove_path(pending)
        return renamed

    def chunk_units(self, chunk: int, records: int) -> list[str] | None:
        """Return the keys of the committed units that make up ``chunk`` (its whole unit, or ranges covering its
        ``records`` records), or None while it is not complete."""
        parts = self.summaries(chunk)
        if unit_key(chunk) in parts:
            return [unit_key(chunk)]
        spans = sorted((parse_key(k)[1], parse_key(k)[2], k) for k in parts)
        covered, keys = 0, []
        for lo, hi, key in spans:
            if lo != covered:
                return None
            covered, keys = hi, [*keys, key]
        return keys if covered == records and records > 0 else None

    def unfinished(self, chunks: dict[int, int]) -> list[int]:
        """Return the chunks of ``chunks`` ({index: records}) not yet complete, in order (one listing of the
        commits; a chunk's ranges are read only when it has some)."""
        keys = {p.name.removeprefix("chunk-").removesuffix(".json") for p in (self.out_dir / "chunks").glob("chunk-*.json")}
        ranged = {key.split(".")[0] for key in keys if ".r" in key}
        return [c for c, records in chunks.items() if unit_key(c) not in keys
                and (unit_key(c) not in ranged or self.chunk_units(c, records) is None)]

    def committed_units(self, chunks, what: str = "chunk") -> list[str]:
        """Return the keys of the committed units that make up every chunk of ``chunks`` ((index, records)
        pairs), in order; range units made moot by a whole commit of their chunk are deleted first. Raises
        RuntimeError naming the ``what`` chunks that are not complete."""
        keys, missing = [], []
        for chunk, records in chunks:
            self.remove_units(self.moot_ranges(chunk))
            units = self.chunk_units(chunk, records)
            if units is None:
                missing.append(chunk)
            else:
                keys += units
        if missing:
            raise RuntimeError(f"{len(missing)} {what}(s) unfinished after the run (first: {missing[:5]}); rerun "
                               "the same command to finish them")
        return keys

    def read_shards(self, keys: list[str], schema: pa.Schema) -> pa.Table:
        """Return the shards of units ``keys`` (those that wrote one) as one table of ``schema``."""
        tables = [pq.read_table(self.shard_path(k), schema=schema) for k in keys if self.shard_path(k).is_file()]
        return pa.concat_tables(tables) if tables else schema.empty_table()

    def moot_ranges(self, chunk: int) -> list[str]:
        """Return range units of ``chunk`` made moot by a whole commit of it (a late duplicate)."""
        parts = self.summaries(chunk)
        return [k for k in parts if k != unit_key(chunk)] if unit_key(chunk) in parts else []

    def mark_interrupted(self) -> int:
        """Record every attempt still marked running as interrupted (its run stopped; no engine died under it);
        return how many. Call at a stage's start, before any worker runs."""
        count = 0
        for record in self.all_attempts():
            if record["status"] == "running":
                self.end_attempt(record, "interrupted", "the run stopped while this attempt ran")
                count += 1
        return count

    def end_orphaned_attempts(self, actor: str, pid: int, why: str) -> int:
        """Record as died, with ``why``, every attempt still marked running by an earlier process of ``actor``
        (Ray restarted it: the process ended without its death hooks, as a SIGKILL, an out-of-memory kill or
        a lost node end it); return how many. Call when an actor starts."""
        orphans = [r for r in self.all_attempts() if r["status"] == "running" and r["actor"] == actor
                   and r["pid"] != pid]
        for record in orphans:
            self.end_attempt(record, "died", why)
        return len(orphans)

    def remove_units(self, keys: list[str]) -> None:
        """Delete the files of committed units (a chunk committed whole makes its partial ranges moot)."""
        for key in keys:
            for path in (self.shard_path(key), self.rejected_path(key), self.summary_path(key)):
                remove_path(path)

    def start_attempt(self, key: str, kind: str, node_id: str, actor: str) -> dict:
        """Record that an attempt at ``key`` starts here; return its record (``id`` names it)."""
        record = {"id": new_attempt_id(), "key": key, "kind": kind, "node_id": node_id, "actor": actor,
                  "host": socket.gethostname(), "pid": os.getpid(), "started": time.time(), "status": "running"}
        write_json_atomic(self._attempt_path(key, record["id"]), record)
        return record

    def end_attempt(self, record: dict, status: str, why: str = "") -> None:
        """Record how an attempt ended: committed, lost (another commit won), cancelled, failed (an error in
        the actor, not the engine's death) or died (with why)."""
        write_json_atomic(self._attempt_path(record["key"], record["id"]),
                          {**record, "status": status, "why": why, "ended": time.time()})

    def touch_attempt(self, record: dict) -> None:
        """Mark a running attempt alive now (its file's time): the driver tells lost work by its silence."""
        os.utime(self._attempt_path(record["key"], record["id"]))

    def attempts(self, key: str) -> list[dict]:
        """Return the records of every attempt at unit ``key``, oldest first."""
        folder = self.out_dir / "attempts" / f"chunk-{key}"
        records = []
        for path in folder.glob("*.json"):
            try:
                records.append(json.loads(path.read_text()))
            except (FileNotFoundError, json.JSONDecodeError):
                continue  # being replaced right now
        return sorted(records, key=lambda r: r["started"])

    def claim_duplicate(self, key: str) -> bool:
        """Return True for the one caller that may run a speculative duplicate of unit ``key`` (a marker file
        created exclusively: spares that pick the same straggler at the same moment do not both run it)."""
        folder = self.out_dir / "attempts" / f"chunk-{key}"
        make_dirs(folder)
        try:
            os.close(os.open(folder / ".duplicate", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            return True
        except FileExistsError:
            return False

    def chunk_attempts(self, chunk: int) -> list[dict]:
        """Return the records of every attempt at ``chunk``: at the whole chunk and at any range of it."""
        keys = [p.name.removeprefix("chunk-") for p in (self.out_dir / "attempts").glob(f"chunk-{chunk:06d}*")]
        return sorted((r for key in keys for r in self.attempts(key)), key=lambda r: r["started"])

    def all_attempts(self) -> list[dict]:
        """Return every attempt record of the stage (for diagnostics and fault measurements)."""
        keys = [p.name.removeprefix("chunk-") for p in (self.out_dir / "attempts").glob("chunk-*") if p.is_dir()]
        return sorted((r for key in keys for r in self.attempts(key)), key=lambda r: r["started"])

    def fault_counts(self) -> dict:
        """Return what the stage survived, from its attempt records: attempts, engine deaths, interrupted runs,
        speculative duplicates and the attempts they made lose (cancelled, lost), and the longest wait for a
        token a busy engine had (from the units' summaries). Call once the stage's workers
        are done: an attempt still marked running then died without saying so (a killed process)."""
        attempts = self.all_attempts()
        counts = {s: sum(a["status"] == s for a in attempts) for s in ("interrupted", "cancelled", "lost", "failed")}
        counts["died"] = sum(a["status"] in ("died", "running") for a in attempts)
        gaps = [s.get("max_progress_gap_s", 0.0) for s in self.summaries().values()]
        return {"attempts": len(attempts), **counts, "speculative": sum(a["kind"] == "speculative" for a in attempts),
                # the longest an engine went without a token while busy: what engine.stall_timeout_s must exceed
                "max_progress_gap_s": max(gaps, default=0.0)}

    def engine_dtypes(self) -> list[str]:
        """Return the dtypes the engines that committed the stage's units ran in, sorted (one on a uniform
        cluster; what ``engine.dtype: auto`` became on their hardware, which changes results)."""
        return sorted({s["engine_dtype"] for s in self.summaries().values() if s.get("engine_dtype")})

    def _attempt_path(self, key: str, attempt: str) -> Path:
        return self.out_dir / "attempts" / f"chunk-{key}" / f"{attempt}.json"

    def prepare(self) -> None:
        """Make the stage's directories (fsynced into their parents) and finish or drop half-done commits."""
        for sub in (*SUBDIRS, "attempts"):
            make_dirs(self.out_dir / sub)
        self.roll_forward()


def merge_parts(paths: list[Path], schema: pa.Schema, target: Path) -> None:
    """Write the Parquet files ``paths`` (read with ``schema``) into one file ``target``, durably."""
    tmp = temp_path(target)
    with pq.ParquetWriter(tmp, schema) as writer:
        for path in paths:
            writer.write_table(pq.read_table(path, schema=schema))
    commit_file(tmp, target)
