"""Config problems as one-line 'dotted.field: what is wrong' messages.

Pydantic reports a bad value as an error with a location tuple (``('sample', 'engine', 'dtype')``,
list indices, union member tags). ``explain`` turns each into the line a user reads, one line per
field, and says which part of the input to leave out so the rest can still be checked.
"""

from __future__ import annotations

import typing
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ValidationError
from typing_extensions import is_typeddict


class ConfigError(ValueError):
    """A config with problems; ``problems`` lists each as 'dotted.field: what is wrong'."""

    def __init__(self, problems: list[str], source: str = "config"):
        self.problems = problems
        super().__init__(f"{source} has {len(problems)} problem(s):\n  - " + "\n  - ".join(problems))


class Problem(NamedTuple):
    """One bad field (``field``: dotted name, ``message``). ``drop`` is the input key path to leave out
    to check the rest; ``reads`` names the fields a cross-field rule looked at."""
    field: str
    message: str
    drop: tuple[str, ...] = ()
    reads: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"

    def under(self, prefix: str) -> Problem:
        """Return this problem of a model found at ``prefix`` (e.g. "sample."), its names made full."""
        return self._replace(field=prefix + self.field, message=self.message.replace("{at}", prefix),
                             reads=tuple(prefix + r for r in (self.reads or (self.field,))))


class RulesBroken(ValueError):
    """Raised by a model validator with the cross-field rules its model breaks (names relative to it)."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("; ".join(str(p.under("")) for p in problems))


_TYPE_NAMES = {"int_type": "int", "float_type": "float", "bool_type": "bool", "string_type": "str",
               "list_type": "list", "dict_type": "a mapping", "model_type": "a mapping"}


def short(value: Any) -> str:
    """Return ``repr(value)``, cut to 200 characters."""
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."


def _unwrap(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _keys(tp: Any) -> dict[str, Any] | None:
    """Return the field names -> annotations of a model or TypedDict, None for anything else."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return {name: f.annotation for name, f in tp.model_fields.items()}
    if is_typeddict(tp):
        return typing.get_type_hints(tp)
    return None


def _walk(model: type, loc: tuple) -> tuple[list, Any]:
    """Return the leading part of ``loc`` that names input (fields, list items) and the annotation there;
    what follows (union member tags) only says which alternative failed."""
    parts: list = []
    tp: Any = model
    for part in loc:
        tp = _unwrap(tp)
        keys = _keys(tp)
        if isinstance(part, int) and typing.get_origin(tp) is list:
            tp = (typing.get_args(tp) or (Any,))[0]
        elif keys is not None and part in keys:
            tp = keys[part]
        else:
            break
        parts.append(part)
    return parts, tp


def _dotted(parts: list) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else part
    return text


def _literals(tp: Any) -> list:
    """Return the words a Literal (or a union holding one) allows."""
    tp = _unwrap(tp)
    if typing.get_origin(tp) is Literal:
        return list(typing.get_args(tp))
    return [w for arg in typing.get_args(tp) if typing.get_origin(_unwrap(arg)) is Literal for w in _literals(arg)]


def _message(error: dict, tp: Any) -> str:
    kind, value, ctx = error["type"], error["input"], error.get("ctx") or {}
    if kind in _TYPE_NAMES:
        return f"expected {_TYPE_NAMES[kind]}, got {type(value).__name__} {short(value)}"
    messages = {
        "finite_number": lambda: f"{value!r} is not a finite number",
        "greater_than_equal": lambda: f"{value!r} is below the minimum {ctx.get('ge')}",
        "less_than_equal": lambda: f"{value!r} is above the maximum {ctx.get('le')}",
        "greater_than": lambda: f"{value!r} must be above {ctx.get('gt')}",
        "less_than": lambda: f"{value!r} must be below {ctx.get('lt')}",
        "literal_error": lambda: f"{short(value)} is not one of {_literals(tp)}",
        "too_short": lambda: f"expected at least {ctx.get('min_length')} item(s), got {short(value)}",
        "missing": lambda: "is required",
        "value_error": lambda: str(ctx.get("error", error["msg"])),
    }
    return messages[kind]() if kind in messages else f"{error['msg']} (got {short(value)})"


def _union_message(errors: list[dict], tp: Any) -> str:
    """One message for a field that takes a number or a word ("auto", "model"): the number's range
    problem, or what it takes when the value is neither."""
    words = _literals(tp)
    others = [e for e in errors if e["type"] != "literal_error"]
    if words and others and others[0]["type"] in _TYPE_NAMES:
        value = others[0]["input"]
        got = repr(value) if isinstance(value, str) else f"{type(value).__name__} {short(value)}"
        return f"expected {_TYPE_NAMES[others[0]['type']]} or one of {words}, got {got}"
    return _message((others or errors)[0], tp)


def _drop(parts: list) -> tuple[str, ...]:
    """The key path to leave out for a bad value at ``parts``: up to the list holding it, if any."""
    named = []
    for part in parts:
        if isinstance(part, int):
            break
        named.append(part)
    return tuple(named)


def explain(err: ValidationError, model: type[BaseModel]) -> list[Problem]:
    """Return one Problem per bad field of ``err`` (a validation of ``model``), in pydantic's order.

    Several errors for one field (the alternatives of a union, several bad list items) become one
    line; an unknown key names the keys its mapping knows; cross-field rules keep their own fields."""
    groups: dict[tuple, list] = {}
    problems: list[Problem] = []
    for error in err.errors(include_url=False):
        loc = tuple(error["loc"])
        if error["type"] == "extra_forbidden":
            parts, tp = _walk(model, loc[:-1])
            known = ", ".join(_keys(_unwrap(tp)) or ())
            problems.append(Problem(_dotted([*parts, loc[-1]]), f"unknown key (known: {known})",
                                    _drop([*parts, loc[-1]])))
            continue
        parts, tp = _walk(model, loc)
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, RulesBroken):
            problems += [p.under(_dotted(parts) + "." if parts else "") for p in cause.problems]
            continue
        groups.setdefault(tuple(parts), [tp]).append(error)
    lines: dict[str, list[str]] = {}
    drops: dict[str, tuple] = {}
    for parts, (tp, *errors) in groups.items():
        items = []
        while parts and isinstance(parts[-1], int):  # an item of a list field: named in the message
            items.insert(0, parts[-1])
            parts = parts[:-1]
        field = _dotted(list(parts)) or "config"
        text = _union_message(errors, tp) if len(errors) > 1 else _message(errors[0], tp)
        lines.setdefault(field, []).append(f"item {items[0]}: {text}" if items else text)
        drops[field] = _drop(list(parts))
    problems += [Problem(field, "; ".join(texts), drops[field]) for field, texts in lines.items()]
    return problems
