"""Typed dataclass configs in general: fields with help and ranges, building and checking a dataclass
tree from YAML data (every problem reported at once), dotted overrides, and ``base:`` file inheritance.

``upft_ray.config`` declares the pipeline's configs with these; nothing here knows about UPFT.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from dataclasses import field
from pathlib import Path
from typing import Any

import yaml

_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


class ConfigError(ValueError):
    """A config with problems; ``problems`` lists each as 'dotted.field: what is wrong'."""

    def __init__(self, problems: list[str], source: str = "config"):
        self.problems = problems
        super().__init__(f"{source} has {len(problems)} problem(s):\n  - " + "\n  - ".join(problems))


def config_field(default: Any, help: str, **kw: Any) -> Any:
    if dataclasses.is_dataclass(default):
        return field(default_factory=type(default), metadata={"help": help, **kw})
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


def field_words(f: dataclasses.Field) -> tuple[str, ...]:
    """Return the words a ``NUMBER | str`` field accepts besides numbers (``allow_auto=True`` means "auto")."""
    return tuple(f.metadata.get("words", ())) + (("auto",) if f.metadata.get("allow_auto") else ())


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."


def _check_value(value: Any, tp: Any, meta: dict, where: str, problems: list[str]) -> Any:
    """Return ``value`` coerced to ``tp`` (int->float only), appending a problem if it does not fit."""
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if tp is float and isinstance(value, str) and _FLOAT.match(value.strip()):
        value = float(value)  # YAML 1.1 reads 5e-6 (no dot) as a string
    ok = {
        bool: lambda v: isinstance(v, bool),
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, float),
        str: lambda v: isinstance(v, str),
        list: lambda v: isinstance(v, list),
    }[tp](value)
    if not ok:
        problems.append(f"{where}: expected {_type_name(tp)}, got {type(value).__name__} {_short(value)}")
        return value
    if tp is str and "\x00" in value:  # no path, model id or prompt can hold one
        problems.append(f"{where}: contains a NUL character")
        return value
    if tp is float and not math.isfinite(value):  # NaN slips through every range comparison below
        problems.append(f"{where}: {value!r} is not a finite number")
        return value
    if "choices" in meta and value not in meta["choices"]:
        problems.append(f"{where}: {value!r} is not one of {list(meta['choices'])}")
    if "min" in meta and value < meta["min"]:
        problems.append(f"{where}: {value!r} is below the minimum {meta['min']}")
    if "max" in meta and value > meta["max"]:
        problems.append(f"{where}: {value!r} is above the maximum {meta['max']}")
    return value


def build_config(cls: type, data: Any, prefix: str, problems: list[str]) -> Any:
    """Return ``cls`` built from ``data``, appending every problem (unknown key, type, range) to ``problems``."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        problems.append(f"{prefix or 'config'}: expected a mapping, got {type(data).__name__}")
        return cls()
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            problems.append(f"{prefix}{key}: unknown key (known: {', '.join(fields)})")
    kwargs = {}
    for name, f in fields.items():
        if name not in data:
            continue
        tp, where = hints[name], f"{prefix}{name}"
        if words := field_words(f):  # a number field that may also say a word ("auto", "model")
            if data[name] in words:
                kwargs[name] = data[name]
                continue
            tp = next((t for t in typing.get_args(tp) if t is not str), tp)
            if isinstance(data[name], str) and not (tp is float and _FLOAT.match(data[name].strip())):
                problems.append(f"{where}: expected {_type_name(tp)} or one of {list(words)}, got {data[name]!r}")
                continue
        if dataclasses.is_dataclass(tp):
            kwargs[name] = build_config(tp, data[name], f"{where}.", problems)
        else:
            kwargs[name] = _check_value(data[name], tp, dict(f.metadata), where, problems)
    return cls(**kwargs)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``a.b.c=value`` into (["a","b","c"], value); the value is read as YAML."""
    if "=" not in text:
        raise ConfigError([f"override {text!r}: expected key=value"], "command line")
    key, raw = text.split("=", 1)
    try:
        return key.strip().split("."), yaml.safe_load(raw) if raw.strip() else ""
    except (yaml.YAMLError, RecursionError) as err:
        why = _one_line(err) or "nested too deeply"
        raise ConfigError([f"{key.strip()}: value {_short(raw)} is not valid YAML ({why})"], "command line") from err


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Return a copy of ``data`` with each ``key.path=value`` override set."""
    data = _deep_copy(data)
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for key in keys[:-1]:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[keys[-1]] = value
    return data


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data


def _merge(base: dict, over: dict) -> dict:
    """Return ``base`` with ``over`` laid on top (mappings merge key by key; anything else replaces)."""
    out = _deep_copy(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


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
    return _merge(read_config_data(path.parent / base, (*seen, path.resolve())), data)


def config_to_dict(cfg: Any) -> dict:
    """Return a config dataclass as a plain dict (for manifests and Ray workers)."""
    return dataclasses.asdict(cfg)
