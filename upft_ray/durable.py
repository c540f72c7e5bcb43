"""Durable commits: a file or directory counts only once its bytes and its name are on disk.

A rename is atomic but not durable: after a power loss or a node crash the page cache is gone, and
a renamed file can come back empty or missing while a later commit mark survives. Every commit in
upft-ray therefore goes: write a temporary name, fsync the file, rename it into place, fsync the
directory that holds the name. Commits under a leased run directory are also fenced (see
:mod:`upft_ray.run_lease`): an attempt that lost its lease cannot make one land.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_path(path: Path) -> None:
    """Flush ``path`` (a file or a directory) to stable storage; raises OSError if it cannot be opened."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """Fsync every file under ``root``, then every directory bottom-up (``root`` included)."""
    root = Path(root)
    for dirpath, _dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            fsync_path(Path(dirpath) / name)
        fsync_path(Path(dirpath))


def commit_file(tmp: Path, path: Path) -> None:
    """Make the finished temporary file ``tmp`` durable and rename it to ``path``, then fsync its directory.

    Raises :class:`upft_ray.run_lease.Fenced` (and removes ``tmp``) when ``path`` lies in a run
    directory whose lease another attempt now holds."""
    from upft_ray.run_lease import check_fence

    tmp, path = Path(tmp), Path(path)
    try:
        check_fence(path)
    except Exception:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(tmp)
    os.replace(tmp, path)
    fsync_path(path.parent)


def commit_dir(staging: Path, target: Path) -> None:
    """Fsync everything under the finished directory ``staging``, rename it to ``target`` (which must not
    exist), then fsync the parent. Raises :class:`upft_ray.run_lease.Fenced` as :func:`commit_file`."""
    from upft_ray.run_lease import check_fence

    staging, target = Path(staging), Path(target)
    check_fence(target)
    fsync_tree(staging)
    staging.rename(target)
    fsync_path(target.parent)


def remove_orphan_temps(dirs) -> int:
    """Remove the temporary files in each of ``dirs`` (every temporary name here starts with a dot and
    no committed file does); return how many went.

    Call only while no writer of those directories can still commit: before a stage starts its writers,
    or after every writer has finished. A writer killed mid-write (its node lost) leaves its temporary
    file behind; nothing will ever rename it, and a later rename of it would fail harmlessly."""
    removed = 0
    for folder in dirs:
        for tmp in Path(folder).glob(".*"):
            if tmp.is_file():
                tmp.unlink(missing_ok=True)
                removed += 1
    return removed


def write_parquet_durably(table, path: Path) -> None:
    """Write the pyarrow ``table`` to ``path`` as Parquet through a temporary name and :func:`commit_file`."""
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp)
    commit_file(tmp, path)


def write_text_durably(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary name and :func:`commit_file`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    commit_file(tmp, path)
