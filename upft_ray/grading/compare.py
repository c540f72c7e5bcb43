"""Is a predicted answer the gold one? Plain numbers exactly (integer and fraction golds) or to the
gold's written precision (decimal golds); lists, tuples, sets and intervals element by element; words by
normalised text; the symbolic rest with math-verify, under a per-answer deadline.

Each comparison returns (correct, status); status is ``ok``, ``unparsable`` (the answer is not math
where the gold is) or ``timeout``."""

from __future__ import annotations

import re
from fractions import Fraction

from upft_ray.grading.deadline import call_with_deadline
from upft_ray.grading.normalize import MATH_WORDS, Number, clean, parse_number, strip_lhs, strip_variable, structure

OK, MISSING, UNPARSABLE, TIMEOUT = "ok", "missing", "unparsable", "timeout"
_MAX_ELEMENTS = 64
_MAX_ANSWER_CHARS = 5000  # longer is a runaway output, not an answer
_TEXT_WORD = re.compile(r"(?<![\\a-zA-Z])[a-zA-Z]{2,}")
_TWO_LETTER_WORDS = frozenset("no or is an it if of to on in at by".split())
_EXACT_TOLERANCE = 1e-12  # symbolic values against an exact gold: rounding noise of a 30-digit evalf only


class NeedsSymbolic(Exception):
    """The comparison needs sympy/math-verify (raised when the caller asked for the cheap part only)."""


def is_text(s: str) -> bool:
    """True when a cleaned answer holds a word (``sodium chloride``, ``odd``) rather than math."""
    for word in _TEXT_WORD.findall(re.sub(r"\\(?:begin|end)\{\w+\*?\}", " ", s)):
        w = word.lower()
        if w not in MATH_WORDS and (len(w) >= 3 or w in _TWO_LETTER_WORDS):
            return True
    return False


def text_key(s: str) -> str:
    """The form two answers are compared in as text: no spaces; words lower-cased, articles and
    surrounding quotes dropped."""
    if is_text(s):
        s = re.sub(r"^(?:the|a|an)\s+", "", s.lower().strip(" \"'`.!"))
    return re.sub(r"\s+", "", s)


_ASIDE = re.compile(r"\s*(?:[,;:(\[]|\s[-\u2013\u2014]+\s|$)|\s+(?:which|because|since|as|that|is|are|was|"
                    r"were|with|for|from|due|here|this|so)\b")


def text_answer_matches(pred: str, gold: str) -> bool:
    """A textual answer: the gold's words, alone or followed by an aside (``sodium chloride, which ...``,
    ``sodium chloride (NaCl)``); not a longer name (``2-methylpropan-2-ol`` is not ``2-methylpropan``)."""
    def words(s: str) -> str:
        return re.sub(r"^(?:the|a|an)\s+", "", re.sub(r"\s+", " ", s.lower()).strip(" \"'`.!"))

    p, g = words(pred), words(gold)
    return p == g or bool(g) and p.startswith(g) and bool(_ASIDE.match(p[len(g):]))


def _round_to(value: Fraction, places: int) -> Fraction:
    """``value`` rounded half away from zero to ``places`` decimals (negative: tens, hundreds, ...)."""
    quantum = Fraction(1, 10 ** places) if places >= 0 else Fraction(10 ** -places)
    steps = (abs(value) / quantum + Fraction(1, 2)).__floor__()
    return (1 if value >= 0 else -1) * steps * quantum


def value_matches(value: Fraction, gold: Number) -> bool:
    """An exact value against a gold number: equal for exact golds, equal once rounded to the gold's
    written precision for decimal golds (``3.14159`` for ``3.14``; not ``3.1``)."""
    if gold.exact:
        return value == gold.value
    return _round_to(value, gold.places) == gold.value


def numbers_match(pred: Number, gold: Number) -> bool:
    """Two plain numbers; a percent sign on one side may be read as written or as hundredths
    (``50\\%`` = 0.5 = 50); with one on both sides the values compare as written."""
    if pred.percent and gold.percent:
        return value_matches(pred.value, gold)
    preds = [pred.value] + ([pred.value / 100] if pred.percent else [])
    golds = [gold] + ([gold._replace(value=gold.value / 100, places=gold.places + 2)] if gold.percent else [])
    return any(value_matches(p, g) for p in preds for g in golds)


def _numeric_value(expr):
    """The 30-digit value of a sympy expression with no free symbols, or None."""
    import sympy  # heavy: loaded when used

    if not isinstance(expr, sympy.Expr) or not expr.is_number:
        return None
    value = sympy.N(expr, 30)
    return value if value.is_number and value.is_finite is not False else None


def _symbolic(pred: str, gold: str, gold_number: Number | None, relations: bool = False) -> tuple[bool, str]:
    """math-verify for what is not a plain number; a value against a numeric gold by our rules.
    ``relations``: a relation may equal a set (``x \\geq 2`` and ``[2, \\infty)``)."""
    try:
        return _symbolic_unguarded(pred, gold, gold_number, relations)
    except Exception:  # sympy and the LaTeX parser raise on malformed input: that answer cannot be read
        return False, UNPARSABLE


def _symbolic_unguarded(pred: str, gold: str, gold_number: Number | None, relations: bool) -> tuple[bool, str]:
    import sympy  # heavy: loaded when used
    from math_verify import parse, verify  # heavy: loaded when used

    pred_parsed = parse(f"${pred}$", parsing_timeout=None)
    if not pred_parsed or not isinstance(pred_parsed[0], (sympy.Basic, sympy.MatrixBase)):
        return False, UNPARSABLE
    gold_parsed = parse(f"${gold}$", parsing_timeout=None)
    if not gold_parsed or not isinstance(gold_parsed[0], (sympy.Basic, sympy.MatrixBase)):
        return False, OK
    g, p = gold_parsed[0], pred_parsed[0]
    gold_value = _numeric_value(g) if isinstance(g, sympy.Expr) else None
    if gold_number is not None or (gold_value is not None and not g.atoms(sympy.Float)):
        value = _numeric_value(p)
        if value is None:  # 3x is not 3, but sin^2 x + cos^2 x is 1: math-verify's symbolic check decides
            return bool(p.free_symbols) and bool(verify(gold_parsed, pred_parsed, timeout_seconds=None)), OK
        if gold_number is not None and p.is_Rational:
            return numbers_match(Number(Fraction(int(p.p), int(p.q)), True, 0), gold_number), OK
        if gold_number is not None and not gold_number.exact:
            return value_matches(Fraction(str(sympy.re(value))), gold_number) and abs(sympy.im(value)) < 1e-25, OK
        target = sympy.Rational(gold_number.value.numerator, gold_number.value.denominator) \
            if gold_number is not None else gold_value
        error = abs(sympy.N(value - target, 30))
        return bool(error <= _EXACT_TOLERANCE * max(1, abs(sympy.N(target, 30)))), OK
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None, allow_set_relation_comp=relations)), OK


def _expand_pm(kind: str, elements: list[str]) -> tuple[str, list[str]]:
    """``1 \\pm \\sqrt{2}`` stands for two answers: ``1 + \\sqrt{2}`` and ``1 - \\sqrt{2}``."""
    if kind not in ("scalar", "list", "set") or not any("\\pm" in e for e in elements):
        return kind, elements
    out = []
    for e in elements:
        out += [e.replace("\\pm", "+", 1), e.replace("\\pm", "-", 1)] if e.count("\\pm") == 1 else [e]
    return ("list" if kind == "scalar" else kind), out


def _all(pairs, symbolic: bool) -> tuple[bool, str]:
    status = OK
    for p, g in pairs:
        ok, s = match(p, g, symbolic)
        if not ok:
            return False, s
        status = s if status == OK else status
    return True, status


def _unordered(preds: list[str], golds: list[str], symbolic: bool) -> tuple[bool, str]:
    """Each gold element matched by a different predicted one (same count), in any order."""
    left, status = list(preds), OK
    for g in golds:
        for i, p in enumerate(left):
            ok, s = match(p, g, symbolic)
            status = s if status == OK else status
            if ok:
                del left[i]
                break
        else:
            return False, status
    return True, OK


def match(pred: str, gold: str, symbolic: bool = True) -> tuple[bool, str]:
    """Compare two cleaned answers; return (correct, status). Raises NeedsSymbolic when ``symbolic`` is
    False and sympy is needed."""
    if text_key(pred) == text_key(gold):
        return True, OK
    if is_text(gold):
        return text_answer_matches(pred, gold), OK
    if is_text(pred):
        return False, UNPARSABLE
    stripped = strip_variable(gold)
    if stripped != gold and "=" in pred and strip_variable(pred) == pred and "," not in pred:
        return _whole_symbolic(pred, gold, symbolic)  # 2x + y = 5 against y = -2x + 5
    pred = strip_lhs(pred) if "=" not in stripped else strip_variable(pred)
    if stripped != gold or text_key(pred) == text_key(stripped):
        return match(pred, stripped, symbolic)
    gold_kind, golds = _expand_pm(*structure(gold))
    pred_kind, preds = _expand_pm(*structure(pred))
    if gold_kind == pred_kind == "scalar":
        gold_number, pred_number = parse_number(gold), parse_number(pred)
        if gold_number and pred_number:
            return numbers_match(pred_number, gold_number), OK
        if not symbolic:
            raise NeedsSymbolic
        return _symbolic(pred, gold, gold_number)
    if {gold_kind, pred_kind} == {"scalar", "set"} and len(preds) == len(golds) == 1:
        return match(preds[0], golds[0], symbolic)  # {1} for 1: a one-element solution set
    if gold_kind != pred_kind and re.search(r"[<>]|\\[lg]eq?(?![a-zA-Z])|\\[lg]t(?![a-zA-Z])|\\mathbb", gold + pred):
        return _whole_symbolic(pred, gold, symbolic)  # x < 3 against (-\infty, 3); \mathbb{R}
    if len(preds) != len(golds) or len(golds) > _MAX_ELEMENTS:
        return False, OK
    if gold_kind in ("list", "set") and pred_kind in ("list", "set") or gold_kind == pred_kind == "union":
        return _unordered(preds, golds, symbolic)
    if gold_kind == pred_kind or gold_kind == "tuple()" and pred_kind == "list":
        return _all(zip(preds, golds), symbolic)
    return False, OK


def _whole_symbolic(pred: str, gold: str, symbolic: bool) -> tuple[bool, str]:
    """math-verify on the whole answers (a relation against an interval)."""
    if not symbolic:
        raise NeedsSymbolic
    return _symbolic(pred, gold, None, relations=True)


def _match_clean(pred: str, gold: str) -> tuple[bool, str]:
    return match(clean(pred), clean(gold))


def compare(predicted: str | None, gold: str, timeout: float = 5) -> tuple[bool, str]:
    """Return (correct, status) for an extracted answer against its gold answer.

    status: ``missing`` (no answer), ``unparsable``, ``timeout`` (past ``timeout`` seconds, from any
    thread) or ``ok``. An empty gold is never matched."""
    if predicted is None or not str(predicted).strip():
        return False, MISSING
    gold_clean, pred_clean = clean(str(gold)), clean(str(predicted))
    if not gold_clean:
        return False, OK
    if not pred_clean or len(pred_clean) > _MAX_ANSWER_CHARS:
        return False, UNPARSABLE
    try:
        return match(pred_clean, gold_clean, symbolic=False)
    except NeedsSymbolic:
        pass
    result, timed_out = call_with_deadline(_match_clean, (str(predicted), str(gold)), timeout)
    return (False, TIMEOUT) if timed_out else result
