"""Same code on retry: a run directory records the code that wrote it, and refuses other code.

A retried job (a RayJob's next attempt, a rerun after a crash) must not continue a run directory with
different code than the one that wrote its committed results: mixing two versions of the sampler or
the grader in one run is as silent and as wrong as mixing two configs. ``RUN/code.json`` records the
package version, a hash of the package's source files, the git commit when the code is a checkout, and
the versions of the packages that shape results. An attempt whose code differs on a directory that
holds results is refused (exit 2, like a changed config) unless ``--allow-code-change`` (or
``UPFT_ALLOW_CODE_CHANGE=1``) says to go on; the record then keeps both.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
from pathlib import Path

import upft_ray
from upft_ray.config import ConfigError
from upft_ray.io.manifests import package_versions, read_json, write_json_atomic

ALLOW_ENV = "UPFT_ALLOW_CODE_CHANGE"
RECORD = "code.json"
log = logging.getLogger("upft")

# Files whose presence means a run directory holds committed results of some stage.
RESULT_GLOBS = ("sample/chunks/chunk-*.json", "sample/manifest.json", "train/run_config.json",
                "eval*/chunks/chunk-*.json", "eval*/metrics.json", "*/sweep_run.json", "*/*/chunks/chunk-*.json")


def source_hash(package_dir: Path = Path(upft_ray.__file__).parent) -> str:
    """Return a hash of every Python file of the package (paths and contents, in a stable order)."""
    digest = hashlib.sha256()
    for path in sorted(package_dir.rglob("*.py")):
        digest.update(str(path.relative_to(package_dir)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def git_commit(package_dir: Path = Path(upft_ray.__file__).parent) -> str:
    """Return the checkout's commit (with ``-dirty`` when it has changes); in the project image (no checkout)
    the commit it was built from (``UPFT_GIT_COMMIT``, cluster/Dockerfile); else ""."""
    if not (package_dir.parent / ".git").exists():
        return os.environ.get("UPFT_GIT_COMMIT", "")
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"], cwd=package_dir,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def code_identity() -> dict:
    """Return what identifies the code of this process: version, source hash, git commit, package versions."""
    return {"version": package_versions().get("upft-ray", "unknown"), "source_hash": source_hash(),
            "git_commit": git_commit(), "versions": package_versions()}


def has_results(run_dir: Path) -> bool:
    """Return True when ``run_dir`` holds committed results of some stage."""
    return any(next(run_dir.glob(pattern), None) is not None for pattern in RESULT_GLOBS)


def check_code(run_dir: Path, allow_change: bool | None = None) -> dict:
    """Record this process's code in ``RUN/code.json``; return the record. Raises ConfigError when the run
    directory holds results of other code and the change is not allowed (``UPFT_ALLOW_CODE_CHANGE=1``)."""
    allow_change = os.environ.get(ALLOW_ENV) == "1" if allow_change is None else allow_change
    path, now = Path(run_dir) / RECORD, code_identity()
    if not path.is_file():
        write_json_atomic(path, {"code": now, "history": []})
        return read_json(path)
    record = read_json(path)
    before = record["code"]
    if before["source_hash"] == now["source_hash"] and before["versions"] == now["versions"]:
        return record
    if has_results(Path(run_dir)) and not allow_change:
        changed = [f"{key} {before.get(key)!r} -> {now.get(key)!r}" for key in ("version", "source_hash", "git_commit")
                   if before.get(key) != now.get(key)]
        changed += [f"{name} {before['versions'].get(name)} -> {now['versions'].get(name)}"
                    for name in sorted(set(before["versions"]) | set(now["versions"]))
                    if before["versions"].get(name) != now["versions"].get(name)]
        raise ConfigError([f"run_dir: {run_dir} holds results written by other code ({'; '.join(changed)}); rerun "
                           "with the code that wrote them, use a new run_dir, or pass --allow-code-change "
                           f"({ALLOW_ENV}=1) to continue it with this code"], "the run")
    if has_results(Path(run_dir)):
        log.warning("%s: continuing results written by other code (source %s, now %s), as allowed", run_dir,
                    before["source_hash"], now["source_hash"])
    record = {"code": now, "history": [*record.get("history", []), before]}
    write_json_atomic(path, record)
    return record
