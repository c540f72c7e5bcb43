"""Fencing: an attempt that lost its run directory's lease cannot make a commit or a delete land there.

The holding attempt's epoch travels to its Ray workers in ``UPFT_RUN_LEASE`` (``upft_ray.io.lease``
sets it). Two mechanisms, one for the early, clear refusal and one that closes the last window:

- :func:`check_fence` raises :class:`Fenced` when a later epoch has claimed the directory, or when
  this attempt's own claim has not been heartbeated for longer than its timeout (another attempt may
  take over at any moment, so it stops committing). Commits call it after their fsync, as the last
  step before the rename.
- A rename cannot be checked and done in one step, so every temporary file and every path being
  deleted goes through the attempt's own staging directory, ``RUN/.staging/epoch-NNNNNNNN/``, made
  when the lease is taken. An attempt that takes over moves the older epochs' staging directories
  away first (:func:`fence_older_staging`): a fenced writer paused between its check and its rename
  then finds its temporary file gone, the rename fails, and nothing of it lands. No worker ever
  creates a staging directory, so a fenced one cannot bring its own back.

Outside a leased run (tests, library use) nothing is fenced and temporary files sit beside their
targets.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from pathlib import Path

from upft_ray.io.claims import LEASE_DIR, claim_path, current_epoch

ENV = "UPFT_RUN_LEASE"
STAGING_DIR = ".staging"


class Fenced(RuntimeError):
    """This attempt's lease was taken over (or ran out): its commits must not land."""


def held() -> dict | None:
    """Return this process's attempt lease ({run_dir, epoch, pid, timeout_s}), or None outside a leased run."""
    raw = os.environ.get(ENV)
    return json.loads(raw) if raw else None


def leased_root(path: Path) -> dict | None:
    """Return the held lease when ``path`` lies in the leased run directory, else None."""
    lease = held()
    if lease is None or not Path(os.path.abspath(path)).is_relative_to(lease["run_dir"]):
        return None
    return lease


def staging_path(run_dir: Path, epoch: int) -> Path:
    """Return the staging directory of ``epoch`` in ``run_dir``."""
    return Path(run_dir) / STAGING_DIR / f"epoch-{epoch:08d}"


def check_fence(path: Path) -> None:
    """Raise :class:`Fenced` when ``path`` lies in this attempt's leased run directory and the attempt may no
    longer commit there: a later epoch claimed it, or our own heartbeat is older than the timeout. Does
    nothing outside a leased run."""
    lease = leased_root(path)
    if lease is None:
        return
    run_dir, epoch = Path(lease["run_dir"]), lease["epoch"]
    now = current_epoch(run_dir / LEASE_DIR)
    if now != epoch:
        raise Fenced(f"not committing {path}: the lease on {run_dir} moved from epoch {epoch} (this attempt) "
                     f"to {now}; another attempt owns this run directory now")
    timeout = float(lease.get("timeout_s") or 0)
    if timeout > 0:
        age = time.time() - claim_path(run_dir / LEASE_DIR, epoch).stat().st_mtime
        if age > timeout:
            raise Fenced(f"not committing {path}: this attempt's lease on {run_dir} (epoch {epoch}) was last "
                         f"heartbeated {age:.0f} s ago, past its {timeout:.0f} s timeout; another attempt may "
                         "take the directory over at any moment")


def staging_dir(path: Path) -> Path | None:
    """Return the staging directory for temporary files of ``path`` when it lies in a leased run, else None.

    Raises :class:`Fenced` when the attempt may no longer commit (:func:`check_fence`) or that directory is
    gone: a later attempt took the run over and moved it."""
    lease = leased_root(path)
    if lease is None:
        return None
    check_fence(path)
    staging = staging_path(Path(lease["run_dir"]), lease["epoch"])
    if not staging.is_dir():
        raise Fenced(f"not writing {path}: the staging directory {staging} of this attempt (epoch "
                     f"{lease['epoch']}) is gone; a later attempt took the run directory over")
    return staging


def fenced_rename_failed(tmp: Path, err: OSError) -> None:
    """Raise :class:`Fenced` when a rename from ``tmp`` failed because its staging directory was moved away
    by a later attempt; return otherwise (the caller re-raises ``err``)."""
    lease = leased_root(tmp)
    if lease is not None and not Path(tmp).exists() and Path(tmp).is_relative_to(
            Path(lease["run_dir"]) / STAGING_DIR):
        raise Fenced(f"not committing from {tmp}: a later attempt took the run directory over and moved this "
                     f"attempt's staging directory away ({type(err).__name__})") from err


def fence_older_staging(run_dir: Path, epoch: int) -> None:
    """Move every staging directory of an epoch below ``epoch`` away (their writers' renames then fail), delete
    them, and make ours. Called by the attempt that has just claimed ``epoch``."""
    root = Path(run_dir) / STAGING_DIR
    root.mkdir(exist_ok=True)
    for old in sorted(root.glob("epoch-*")):
        if old.name != staging_path(run_dir, epoch).name:
            fenced = root / f"fenced-{old.name}-{secrets.token_hex(4)}"
            try:
                old.rename(fenced)
            except FileNotFoundError:
                continue  # another taker moved it
            shutil.rmtree(fenced, ignore_errors=True)
    staging_path(run_dir, epoch).mkdir(exist_ok=True)
