"""Config input: YAML files laid over the file their ``base:`` names, and dotted ``key=value`` overrides.

Both produce plain data; ``upft_ray.config`` validates it (``upft_ray.config.loading``). Nothing here knows about UPFT.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from upft_ray.config.errors import ConfigError, short


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``a.b.c=value`` into (["a","b","c"], value); the value is read as YAML.

    Raises ConfigError when there is no ``=`` or the value is not valid YAML."""
    if "=" not in text:
        raise ConfigError([f"override {text!r}: expected key=value"], "command line")
    key, raw = text.split("=", 1)
    try:
        return key.strip().split("."), yaml.safe_load(raw) if raw.strip() else ""
    except (yaml.YAMLError, RecursionError) as err:
        why = _one_line(err) or "nested too deeply"
        raise ConfigError([f"{key.strip()}: value {short(raw)} is not valid YAML ({why})"], "command line") from err


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Return a copy of ``data`` with each ``key.path=value`` override set (mappings made on the way)."""
    data = _copy(data)
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for key in keys[:-1]:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[keys[-1]] = value
    return data


def _copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_copy(v) for v in data]
    return data


def merge(base: dict, over: dict) -> dict:
    """Return ``base`` with ``over`` laid on top (mappings merge key by key; anything else replaces)."""
    out = _copy(base)
    for key, value in over.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def without(data: dict, paths: list[tuple[str, ...]]) -> dict:
    """Return a copy of ``data`` with the value at each key path left out (paths that are absent are skipped)."""
    data = _copy(data)
    for path in paths:
        node = data
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if path and isinstance(node, dict):
            node.pop(path[-1], None)
    return data


def read_config_data(path: Path, seen: tuple = ()) -> dict:
    """Return the YAML mapping in ``path``, laid over the file its ``base:`` key names (relative to it).

    ``base`` lets a variant (an SFT baseline, a sweep point) state only what differs from its parent.
    Raises FileNotFoundError naming a missing file, ConfigError for bad YAML, an empty file (more
    likely a wrong or truncated file than a wish for every default; write ``{}`` for that) or a
    cycle of bases."""
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    if path.resolve() in seen:
        raise ConfigError([f"base: {path} includes itself"], str(path))
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as err:
        raise ConfigError([f"not valid YAML: {_one_line(err) or 'nested too deeply'}"], str(path)) from err
    if data is None:
        raise ConfigError(["the file is empty (no settings); write `{}` to mean every default"], str(path))
    if not isinstance(data, dict):
        raise ConfigError([f"top level must be a mapping, got {type(data).__name__}"], str(path))
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError([f"base: expected a file path, got {base!r}"], str(path))
    return merge(read_config_data(path.parent / base, (*seen, path.resolve())), data)
