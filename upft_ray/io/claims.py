"""The claim files of a run directory's lease (``RUN/.lease/epoch-NNNNNNNN.json``) and what they say.

A claim names its holder (host, pid, start time, a random token) and its timeout; the holder is the
highest epoch, and its heartbeat is the claim file's mtime (``upft_ray.io.lease`` writes and beats
them). Reading never blocks a directory for ever: a claim that cannot be read (created and not yet
written, truncated, corrupt) counts as live until its mtime is older than the default timeout, then
it is taken over, and every description of it names the file and what is wrong with it.

Timeout: ``UPFT_LEASE_TIMEOUT_S`` (default 60 s). Clocks: ages are this host's clock minus the file's
mtime, so hosts sharing a run directory need clocks within a few seconds of each other (NTP).
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path

LEASE_DIR = ".lease"
CLAIM = re.compile(r"^epoch-(\d{8})\.json$")


def lease_timeout_s() -> float:
    """Return the takeover timeout in seconds (``UPFT_LEASE_TIMEOUT_S``, default 60)."""
    return float(os.environ.get("UPFT_LEASE_TIMEOUT_S", "60"))


def claim_path(lease_dir: Path, epoch: int) -> Path:
    """Return the claim file of ``epoch``."""
    return Path(lease_dir) / f"epoch-{epoch:08d}.json"


def current_epoch(lease_dir: Path) -> int:
    """Return the highest claimed epoch in ``lease_dir`` (0 when none); raises OSError other than a
    missing directory (a file system that cannot be read cannot say who holds the run)."""
    try:
        names = os.listdir(lease_dir)
    except FileNotFoundError:
        return 0
    return max((int(m.group(1)) for m in map(CLAIM.match, names) if m), default=0)


@dataclass
class HolderState:
    """What a claim file says about its holder, and how old its heartbeat is."""
    epoch: int
    path: Path
    info: dict
    age_s: float
    released: bool
    problem: str = ""  # why the claim could not be read ("" when it could)

    def timeout_s(self) -> float:
        """Return the claim's own timeout (the default one for a claim that cannot be read)."""
        value = self.info.get("timeout_s", lease_timeout_s())
        return float(value) if isinstance(value, (int, float)) else lease_timeout_s()

    def live(self) -> bool:
        """True while the holder heartbeats within its timeout and is not known to be dead."""
        if self.released or self.age_s > self.timeout_s():
            return False
        return not self.dead_here()

    def dead_here(self) -> bool:
        """True when the holder ran on this host and its process is gone (a retry on the same machine need not
        wait out the timeout). A reused PID only makes us wait for the timeout, never take over early."""
        pid = self.info.get("pid")
        if self.info.get("host") != socket.gethostname() or not isinstance(pid, int) or pid <= 0:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def describe(self) -> str:
        """Return one line naming the holder, its heartbeat and timeout (and the claim's problem, if any)."""
        state = "released" if self.released else f"heartbeat {self.age_s:.1f} s ago"
        state += ", process gone" if not self.released and self.dead_here() else ""
        holder = self.info.get("holder", "?")
        text = f"holder {holder} (epoch {self.epoch}, {state}, timeout {self.timeout_s():.0f} s)"
        return f"{text}; claim file {self.path} {self.problem}" if self.problem else text


def read_holder(lease_dir: Path) -> HolderState | None:
    """Return the current holder's state, or None when the directory was never leased."""
    epoch = current_epoch(lease_dir)
    if epoch == 0:
        return None
    path = claim_path(lease_dir, epoch)
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError:  # removed between the listing and now: as good as released
        return HolderState(epoch, path, {}, float("inf"), True)
    info, problem = _read_claim(path)
    return HolderState(epoch, path, info, max(0.0, time.time() - mtime), mtime == 0, problem)


def _read_claim(path: Path) -> tuple[dict, str]:
    """Return (what the claim file holds, "" or why it cannot be read)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        return {}, f"cannot be read ({type(err).__name__}: {err})"
    if not text.strip():  # created (O_EXCL) and not yet written, or truncated to nothing
        return {}, "is empty (a claim being written, or truncated)"
    try:
        info = json.loads(text)
    except json.JSONDecodeError as err:
        return {}, f"is not valid JSON ({err.msg} at character {err.pos}: truncated or corrupt)"
    return (info, "") if isinstance(info, dict) else ({}, "does not hold a JSON object")
