"""Durable, fenced commits and deletes: a file or directory counts only once its bytes and its name are on disk.

A rename is atomic but not durable: after a power loss or a node crash the page cache is gone, and
a renamed file can come back empty or missing while a later commit mark survives. Every commit in
upft-ray therefore goes: write a temporary name (unique per attempt: epoch, host, pid and a random
part), fsync the file, check the fence, rename it into place, fsync the directory that holds the name.
New directories are fsynced into their parents. Under a leased run directory the temporary names live
in the attempt's staging directory and deletes go through it too, so an attempt that lost its lease
cannot make a commit or a delete land (``upft_ray.io.fencing``).
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import socket
from pathlib import Path

import pyarrow.parquet as pq

from upft_ray.io.fencing import Fenced, check_fence, fenced_rename_failed, staging_dir

_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV}


def fsync_path(path: Path) -> None:
    """Flush ``path`` (a file or a directory) to stable storage; raises OSError if it cannot be opened."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """Fsync every file under ``root``, then every directory bottom-up (``root`` included)."""
    for dirpath, _dirnames, filenames in os.walk(Path(root), topdown=False):
        for name in filenames:
            fsync_path(Path(dirpath) / name)
        fsync_path(Path(dirpath))


def make_dirs(path: Path) -> Path:
    """Create ``path`` and any missing parents, each new one fsynced into its parent; return ``path``."""
    path = Path(path)
    missing = []
    while not path.is_dir():
        missing.append(path)
        path = path.parent
    for new in reversed(missing):
        try:
            new.mkdir()
        except FileExistsError:
            continue  # made by another writer meanwhile
        fsync_path(new.parent)
    return missing[0] if missing else path


def temp_path(path: Path) -> Path:
    """Return a fresh temporary name for ``path``: in the attempt's staging directory under a leased run
    (raises :class:`Fenced` when that is gone), else a hidden name beside ``path``."""
    path = Path(path)
    tag = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(6)}"
    staging = staging_dir(path)
    if staging is not None:
        return staging / f"{path.name}.{tag}"
    make_dirs(path.parent)
    return path.with_name(f".{path.name}.tmp-{tag}")


def commit_file(tmp: Path, path: Path) -> None:
    """Make the finished temporary file ``tmp`` durable and rename it to ``path`` (replacing it), then fsync
    its directory. Raises :class:`upft_ray.io.fencing.Fenced` (``tmp`` removed) in an attempt that lost its lease."""
    tmp, path = Path(tmp), Path(path)
    fsync_path(tmp)
    try:
        check_fence(path)  # the last step before the rename
    except Fenced:
        tmp.unlink(missing_ok=True)
        raise
    make_dirs(path.parent)
    try:
        os.replace(tmp, path)
    except FileNotFoundError as err:
        fenced_rename_failed(tmp, err)
        raise
    fsync_path(path.parent)


def commit_new_file(tmp: Path, path: Path) -> bool:
    """Commit ``tmp`` as ``path`` only if no file is there yet (first commit wins); return whether it won.

    The loser's ``tmp`` is removed and nothing of it lands. Durable and fenced as :func:`commit_file`.
    On file systems without hard links the check and the rename are two steps."""
    tmp, path = Path(tmp), Path(path)
    fsync_path(tmp)
    try:
        check_fence(path)
        make_dirs(path.parent)
        os.link(tmp, path)
    except FileExistsError:
        return False
    except FileNotFoundError as err:
        fenced_rename_failed(tmp, err)
        raise
    except OSError as err:
        if err.errno not in _NO_HARD_LINKS or path.exists():
            raise
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_path(path.parent)
    return True


def commit_dir(staging: Path, target: Path) -> None:
    """Fsync everything under the finished directory ``staging``, rename it to ``target`` (which must not
    exist), then fsync the parent. Fenced as :func:`commit_file`."""
    staging, target = Path(staging), Path(target)
    fsync_tree(staging)
    check_fence(target)
    make_dirs(target.parent)
    try:
        staging.rename(target)
    except FileNotFoundError as err:
        fenced_rename_failed(staging, err)
        raise
    fsync_path(target.parent)


def staging_for(target: Path) -> Path:
    """Return a fresh, empty directory to build ``target`` in before :func:`commit_dir` (same file system)."""
    staging = temp_path(target)
    staging.mkdir()
    return staging


def remove_path(path: Path) -> None:
    """Delete the file or directory ``path`` (absent: nothing to do), fenced: under a leased run it is first
    renamed into the attempt's staging directory, so a fenced attempt cannot delete the new holder's files."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    check_fence(path)
    doomed = path
    if staging_dir(path) is not None:
        doomed = temp_path(path)
        try:
            path.rename(doomed)
        except FileNotFoundError as err:
            fenced_rename_failed(doomed, err)
            return  # deleted meanwhile
        fsync_path(path.parent)
    if doomed.is_dir() and not doomed.is_symlink():
        shutil.rmtree(doomed)
    else:
        doomed.unlink(missing_ok=True)


def remove_orphan_temps(dirs) -> int:
    """Remove the temporary files beside targets in each of ``dirs`` (every such name starts with a dot and
    no committed file does); return how many went. Fenced like every delete.

    Call only while no writer of those directories can still commit: before a stage starts its writers,
    or after every writer has finished. A writer killed mid-write (its node lost) leaves its temporary
    file behind; nothing will ever rename it. (Under a leased run temporary files live in the attempt's
    staging directory, which the next attempt removes whole.)"""
    removed = 0
    for folder in dirs:
        for tmp in Path(folder).glob(".*"):
            if tmp.is_file():
                remove_path(tmp)
                removed += 1
    return removed


def write_bytes_durably(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary name and :func:`commit_file`."""
    tmp = temp_path(path)
    tmp.write_bytes(data)
    commit_file(tmp, path)


def write_text_durably(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary name and :func:`commit_file`."""
    write_bytes_durably(path, text.encode("utf-8"))


def write_parquet_durably(table, path: Path) -> None:
    """Write the pyarrow ``table`` to ``path`` as Parquet through a temporary name and :func:`commit_file`."""
    tmp = temp_path(path)
    pq.write_table(table, tmp)
    commit_file(tmp, path)


def append_line_durably(path: Path, line: str) -> None:
    """Append one line to the log ``path`` and fsync it (a resume reads it back); fenced like a commit."""
    path = Path(path)
    check_fence(path)
    make_dirs(path.parent)
    with path.open("a") as fh:
        fh.write(line.rstrip("\n") + "\n")
        fh.flush()
        os.fsync(fh.fileno())
