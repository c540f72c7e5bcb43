"""Temporary directories a process owns, named by its pid, so that a dead process's ones are found and removed.

A process that is SIGKILLed (an engine actor leaving for a dead or hung engine, a Ray Train worker killed while
it saves, everything after ``ray stop --force``) runs no cleanup, and what it kept in the temp dir stays there:
a staged checkpoint (GBs), vLLM's socket files (thousands on a busy node). Each such directory is
``{prefix}{pid}-XXXXXXXX`` in the temp dir; a later process of the same kind removes those whose pid is gone.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import psutil

_owned: dict[Path, int] = {}  # path -> the pid that made it (a forked child inherits this, not the directories)


def scratch_dir(prefix: str) -> Path:
    """Create ``{prefix}{pid}-XXXXXXXX`` in the temp dir; return its path. It is removed by ``remove_scratch``,
    when this process exits normally, or by ``remove_orphaned_scratch`` in another process once this one is gone."""
    path = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-"))
    _owned[path] = os.getpid()
    return path


def remove_scratch(path: Path | str) -> None:
    """Remove the scratch directory ``path`` (made by ``scratch_dir``) with what it holds."""
    _owned.pop(Path(path), None)
    shutil.rmtree(path, ignore_errors=True)


def remove_owned_scratch() -> None:
    """Remove every scratch directory this process made and still holds (at exit; before an ``os._exit``)."""
    for path, pid in list(_owned.items()):
        if pid == os.getpid():
            remove_scratch(path)


atexit.register(remove_owned_scratch)  # once per process, however many directories come and go


def scratch_dirs(prefix: str, pid: int, root: Path | str | None = None) -> list[Path]:
    """Return the scratch directories ``{prefix}{pid}-*`` of process ``pid`` in the temp dir (or ``root``), sorted."""
    return sorted(Path(root or tempfile.gettempdir()).glob(f"{prefix}{pid}-*"))


def remove_orphaned_scratch(prefix: str, root: Path | str | None = None) -> int:
    """Remove the directories ``{prefix}PID-*`` in the temp dir (or ``root``) whose process is gone (or a zombie:
    a killed process whose parent died too waits for an init that may never reap it); return how many were
    removed."""
    removed = 0
    for path in Path(root or tempfile.gettempdir()).glob(f"{prefix}*-*"):
        pid = path.name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and _gone(int(pid)) and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False  # another user's process: alive, not ours to judge
