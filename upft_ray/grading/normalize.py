"""Answer strings to a canonical form: LaTeX noise, units and currency off, thousands separators only
where they sit in thousands positions, lists split at their top-level commas, plain numbers as exact
fractions that remember their written precision."""

from __future__ import annotations

import re
from fractions import Fraction
from typing import NamedTuple

_UNICODE = {"\u2212": "-", "\u2013": "-", "\u00d7": "\\times ", "\u22c5": "\\cdot ", "\u00b7": "\\cdot ",
            "\u00f7": "\\div ", "\u03c0": "\\pi ", "\u221e": "\\infty ", "\u00b1": "\\pm ", "\u2264": "\\le ",
            "\u2265": "\\ge ", "\u221a": "\\sqrt", "\u00b0": "^\\circ", "\u2009": " ", "\u202f": " ", "\u00a0": " "}
# words that name a function or constant rather than a unit or a sentence
MATH_WORDS = frozenset("sin cos tan sec csc cot arcsin arccos arctan sinh cosh tanh log ln lg exp sqrt pi "
                       "inf infty mod gcd lcm det dx dy dt".split())
_TEXT_CMD = re.compile(r"\\(?:text|textrm|textnormal|mbox|mathrm|textit|textsf|operatorname)\s*\{([^{}]*)\}"
                       r"(\^\{?\d\}?)?")
_BOLD_CMD = re.compile(r"\\(?:textbf|mathbf|boldsymbol|bm|mathit|mathsf)\s*\{([^{}]*)\}")
_SPACING = re.compile(r"(?<!\\)\\[!;:>]|\\quad|\\qquad|\\displaystyle|\\limits|~|(?<!\\)\\ (?=\S)")
_SIZING = re.compile(r"\\(?:left|right|bigl|bigr|Bigl|Bigr|biggl|biggr|big|Big|bigg|Bigg)(?![a-zA-Z])\.?")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\circ|\\degree|\^\{\\text\{o\}\}")
_THIN_THOUSANDS = re.compile(r"(?<=\d)(?:\\,|\{,\}|\\ |\\thinspace ?| )(?=\d{3}(?!\d))")
_COMMA_THOUSANDS = re.compile(r"(?<![\d.,])\d{1,3}(?:,\d{3})+(?!\d|,\d)")
_UNIT_TAIL = re.compile(r"(?<=[\d%}).])\s*[a-zA-Z]{2,}\.?(?:\^\{?\d\}?)?(?:\s+[a-zA-Z]{2,}\.?(?:\^\{?\d\}?)?)*\s*$")
SCALES = {"thousand": 3, "million": 6, "billion": 9, "trillion": 12}
_SCALE = re.compile(r"(\d)\s*(thousand|million|billion|trillion)\b", re.IGNORECASE)
_LONE_LHS = re.compile(r"^\s*[a-zA-Z](?:_\{?\w+\}?)?\s*(?:=|\\in(?![a-zA-Z]))\s*(?=\S)")


def unit_words(match: re.Match) -> bool:
    """True when a trailing run of words is a unit or a noun (``cm``, ``apples``), not a function name."""
    return not any(w.lower() in MATH_WORDS for w in re.findall(r"[a-zA-Z]+", match.group(0)))


def _text_group(match: re.Match) -> str:
    """``\\text{...}``: its words are dropped as a unit after a number, kept otherwise (``\\text{033}``)."""
    inner = match.group(1).strip()
    if re.fullmatch(r"\s*(?:and|or|,|;)\s*", inner):
        return ","
    before = match.string[:match.start()].rstrip()
    if re.fullmatch(r"[a-zA-Z .,/]*", inner) and before and (before[-1].isdigit() or before[-1] in "}%)"):
        return " "
    return f" {inner}{match.group(2) or ''} " if inner else " "


def clean(answer: str) -> str:
    """Return ``answer`` with math delimiters, spacing, sizing, degrees, currency, units and a trailing
    period removed, ``\\dfrac``-like commands unified, and thousands separators dropped where valid."""
    s = answer.strip()
    for char, repl in _UNICODE.items():
        s = s.replace(char, repl)
    s = s.replace("\\$", " ").replace("$", " ").replace("\\(", " ").replace("\\)", " ")
    s = s.replace("\\[", " ").replace("\\]", " ")
    s = re.sub(r"\\[dtc]frac", r"\\frac", s)
    s = re.sub(r"\\varnothing|\u2205|^\s*\\\{\s*\\\}\s*$", r"\\emptyset", s)
    s = re.sub(r"^(?:\\text\{)?\s*all real(?: numbers)?\s*\}?$", r"\\mathbb{R}", s, flags=re.IGNORECASE)
    s = _SIZING.sub("", s)
    s = _THIN_THOUSANDS.sub(",", s)
    s = s.replace("{,}", ",").replace(",\\,", ", ").replace("\\,", " ")
    s = _SPACING.sub(" ", s)
    s = _DEGREES.sub("", s)
    s = s.replace("\\%", "%").replace("\\pm", "\\pm ")
    for _ in range(3):  # nested \text{\textbf{..}}
        s = _BOLD_CMD.sub(r"\1", s)
        s = _TEXT_CMD.sub(_text_group, s)
    s = _SCALE.sub(lambda m: f"{m.group(1)}\\times10^{{{SCALES[m.group(2).lower()]}}}", s)
    s = re.sub(r"\s+", " ", s).strip()
    s = re.sub(r"^\*+|\*+$", "", s).strip()
    s = re.sub(r"(?<=[\d})\]])\s*,?\s+(?:and|or)\s+(?=[-\d\\(\[a-zA-Z])", ", ", s)
    while s.startswith("{") and s.endswith("}") and _closes_at_end(s):
        s = s[1:-1].strip()
    s = re.sub(r"(?<=[\w})\]])\s*[.。]+$", "", s).strip()
    tail = _UNIT_TAIL.search(s)
    if tail and unit_words(tail) and not re.search(r"(?<![\\a-zA-Z])[a-zA-Z]{3,}", s[:tail.start()]):
        s = s[:tail.start()].strip()
    return _COMMA_THOUSANDS.sub(lambda m: m.group(0).replace(",", ""), s)


def split_top(s: str, sep: str = ",") -> list[str]:
    """Split ``s`` at ``sep`` outside brackets and braces (``\\{``/``\\}`` count as braces)."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s) and s[i + 1] in "{}":
            depth += 1 if s[i + 1] == "{" else -1
            i += 2
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0 and s.startswith(sep, i):
            parts.append(s[start:i])
            start = i + len(sep)
            i = start
            continue
        i += 1
    parts.append(s[start:])
    return [p.strip() for p in parts]


def _closes_at_end(s: str) -> bool:
    """True when the bracket opening ``s`` is the one that closes at its last character."""
    depth = 0
    for i, c in enumerate(s):
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth == 0:
                return i == len(s) - 1
    return False


def structure(s: str) -> tuple[str, list[str]]:
    """Return (kind, elements) of an answer: ``set`` (``\\{..\\}``), ``union``, ``interval`` or ``tuple``
    (kind carries its brackets, e.g. ``tuple()`` / ``interval[)``), ``list`` (bare commas) or ``scalar``."""
    s = s.strip()
    if s.startswith("\\{") and s.endswith("\\}") and _closes_at_end(s[1:-1] + "}"):
        inner = s[2:-2].strip()
        return "set", [e for e in split_top(inner) if e] if inner else []
    union = split_top(s, "\\cup")
    if len(union) > 1:
        return "union", union
    if len(s) >= 2 and s[0] in "([" and s[-1] in ")]" and _closes_at_end(s):
        inner = split_top(s[1:-1])
        if len(inner) > 1:
            return f"tuple{s[0]}{s[-1]}", inner
        if s[0] == "(" and s[-1] == ")":
            return structure(s[1:-1])
    parts = [p for p in split_top(s)]
    parts = [q for p in parts for q in split_top(p, ";")]
    return ("list", parts) if len(parts) > 1 else ("scalar", [s])


def strip_lhs(s: str) -> str:
    """``x = 5`` -> ``5``; ``5 + 7 = 12`` -> ``12``; ``x \\in [2, 5]`` -> ``[2, 5]``; ``x=3, x=-3`` ->
    ``3, -3``: the value after the last top-level ``=`` of each listed answer."""
    items = split_top(s)
    if len(items) > 1:
        return ", ".join(strip_lhs(i) for i in items) if any("=" in i or "\\in" in i for i in items) else s
    pieces = re.split(r"\\approx|\u2248|\\simeq", s)
    if len(pieces) > 1:  # "5/12 \\approx 0.4167": the exact value stated first; "x \\approx 0.42": the value
        return strip_lhs(pieces[0].strip() if re.search(r"\d", pieces[0]) else pieces[-1].strip())
    parts = split_top(s, "=")
    if len(parts) > 1 and parts[-1] and not re.search(r"[<>!]$|\\[lg]e?q?$|\\neq?$", parts[-2]):
        return parts[-1]
    return strip_variable(s)


def strip_variable(s: str) -> str:
    """``y = 2x + 3`` -> ``2x + 3``, ``x \\in [2, 5]`` -> ``[2, 5]``, in each listed answer; an equation
    whose left side is not a lone variable (``x^2 + y^2 = 25``) stays whole."""
    items = split_top(s)
    if len(items) > 1:
        return ", ".join(strip_variable(i) for i in items) if any(_LONE_LHS.match(i) for i in items) else s
    return _LONE_LHS.sub("", s)


class Number(NamedTuple):
    """A plain number: exact value, whether it is written exactly (integer, fraction, repeating decimal),
    the place of its last written digit for decimals (``3.14`` -> 2; ``1.5e6`` -> -5), and a percent sign."""
    value: Fraction
    exact: bool
    places: int
    percent: bool = False


_INT = r"\d+"
_DEC = r"(?:\d+\.\d*|\.\d+)"
_REPEAT = re.compile(r"(\d*)\.(\d*)(?:\\overline|\\bar)\{?(\d+)\}?")
_SCI = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(?:e([-+]?\d+)|(?:\\times|\\cdot|\*|x)10\^\{?([-+]?\d+)\}?)")
_POW10 = re.compile(r"10\^\{?([-+]?\d+)\}?")
_FRAC = re.compile(r"\\frac\{([-+]?[\d.]+)\}\{([-+]?[\d.]+)\}|\\frac(\d)(\d)|([\d.]+)/([\d.]+)")
_MIXED = re.compile(r"(\d+)(?:\\frac\{(\d+)\}\{(\d+)\}|\\frac(\d)(\d)| (\d+)/(\d+))")
_MAX_EXP = 400  # beyond this a "number" is a pathological input for sympy, not us


def _decimal(text: str) -> Number | None:
    """A plain integer or decimal (no sign)."""
    if re.fullmatch(_INT, text):
        return Number(Fraction(int(text)), True, 0)
    if re.fullmatch(_DEC, text):
        places = len(text.split(".")[1])
        return Number(Fraction(text if not text.endswith(".") else text[:-1]), places == 0, places)
    return None


def _unsigned(s: str) -> Number | None:
    if len(s) > 400:
        return None
    if plain := _decimal(s):
        return plain
    if m := _REPEAT.fullmatch(s):
        whole, fixed, cycle = m.group(1) or "0", m.group(2), m.group(3)
        value = Fraction(int(whole + fixed), 10 ** len(fixed))
        value += Fraction(int(cycle), (10 ** len(cycle) - 1) * 10 ** len(fixed))
        return Number(value, True, 0)
    if m := _SCI.fullmatch(s):
        exp = int(m.group(2) or m.group(3))
        mantissa = _decimal(m.group(1))
        if abs(exp) > _MAX_EXP or mantissa is None:
            return None
        return Number(mantissa.value * Fraction(10) ** exp, mantissa.exact, mantissa.places - exp)
    if m := _POW10.fullmatch(s):
        exp = int(m.group(1))
        return Number(Fraction(10) ** exp, True, 0) if abs(exp) <= _MAX_EXP else None
    if m := _MIXED.fullmatch(s):
        groups = [g for g in m.groups()[1:] if g is not None]
        num, den = int(groups[0]), int(groups[1])
        if den and num < den:
            return Number(int(m.group(1)) + Fraction(num, den), True, 0)
    if m := _FRAC.fullmatch(s):
        num_text, den_text = [g for g in m.groups() if g is not None]
        num, den = _signed(num_text), _signed(den_text)
        if num and den and den.value:
            exact = num.exact and den.exact
            return Number(num.value / den.value, exact, max(num.places, den.places))
    return None


def _signed(s: str) -> Number | None:
    sign = -1 if s.startswith("-") else 1
    n = _unsigned(s.lstrip("+-")) if s[:1] in "+-" else _unsigned(s)
    return n._replace(value=sign * n.value) if n else None


def parse_number(answer: str) -> Number | None:
    """Return the plain number a cleaned answer writes (``-1,234.5``, ``3/4``, ``\\frac{3}{4}``,
    ``2\\frac{1}{2}``, ``0.\\overline{3}``, ``1.5e6``, ``1.5\\times10^{6}``, ``10\\%``), or None."""
    s = answer.strip()
    percent = s.endswith("%")
    s = s.rstrip("%").strip()
    s = re.sub(r"\s*(\\times|\\cdot|\*|/)\s*", r"\1", s)
    s = re.sub(r"(\d)\s+(\\frac)", r"\1\2", s).replace("\\frac ", "\\frac")
    s = re.sub(r"(?<=\d) (?=\d+/)", "\0", s).replace(" ", "").replace("\0", " ")
    if s.startswith("-(") and s.endswith(")") or s.startswith("(") and s.endswith(")") and "(" not in s[1:]:
        s = s.replace("(", "", 1)[:-1]
    number = _signed(s) if s else None
    return number._replace(percent=percent) if number else None
