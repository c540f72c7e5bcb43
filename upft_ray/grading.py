"""Answer extraction and grading: last ``\\boxed{}`` (brace-matched), else "the answer is", else the
final number, compared with math-verify (numbers, fractions, LaTeX) as Qwen2.5-Math's eval does."""

from __future__ import annotations

import re
import threading

_ANSWER_IS = re.compile(r"answer is[:\s]*\$?([^\n$]+)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def last_boxed(text: str) -> str | None:
    """Return the content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) with nested braces, or None."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth, begin = 1, i
    while i < len(text):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[begin:i].strip()
        i += 1
    return None  # unbalanced: treat as no boxed answer


def extract_answer(text: str) -> str | None:
    """Return the model's final answer from ``text``: boxed, then 'the answer is', then last number."""
    if not text:
        return None
    boxed = last_boxed(text)
    if boxed:
        return boxed
    said = _ANSWER_IS.findall(text)
    if said:
        candidate = said[-1].strip().rstrip(".")
        leading = _NUMBER.match(candidate)  # "13 apples, not 14" -> 13; LaTeX stays whole
        return leading.group(0).replace(",", "") if leading else candidate
    numbers = _NUMBER.findall(text)
    return numbers[-1].replace(",", "").rstrip(".") if numbers else None


def _as_float(text: str) -> float | None:
    try:
        return float(text.replace(",", "").strip().rstrip("."))
    except ValueError:
        return None


def _symbolic_match(gold: str, predicted: str, timeout: int | None) -> bool:
    """math-verify equivalence of two answer strings (``timeout`` uses signal.alarm: main thread only)."""
    from math_verify import parse, verify

    try:
        gold_parsed = parse(f"${gold}$", parsing_timeout=timeout)
        pred_parsed = parse(f"${predicted}$", parsing_timeout=timeout)
        return bool(gold_parsed and pred_parsed and verify(gold_parsed, pred_parsed, timeout_seconds=timeout))
    except Exception:  # math-verify raises on some malformed LaTeX; that answer is simply wrong
        return False


_pool = None  # a one-process pool for grading off the main thread, made on first need


def _match_in_subprocess(gold: str, predicted: str, timeout: int) -> bool:
    """Run the symbolic match in a helper process; kill it past ``timeout`` seconds (verdict False).

    signal.alarm cannot interrupt a non-main thread (Ray actors may grade from threads), so the
    deadline is enforced from outside: a stuck comparison costs its process, not the run."""
    import multiprocessing

    global _pool
    if _pool is None:
        _pool = multiprocessing.get_context("spawn").Pool(1)
    result = _pool.apply_async(_symbolic_match, (gold, predicted, timeout))
    try:
        return result.get(timeout + 5)  # + start-up and import slack; math-verify's own alarm fires first
    except multiprocessing.TimeoutError:
        _pool.terminate()
        _pool = None
        return False


def answers_match(predicted: str | None, gold: str, timeout: int = 5) -> bool:
    """Return True when ``predicted`` equals ``gold`` numerically or symbolically (math-verify).

    Plain numbers compare directly; anything else goes to math-verify with a ``timeout`` (seconds)
    per answer, so one pathological answer is graded False instead of hanging the run."""
    if predicted is None or not str(gold).strip() or not str(predicted).strip():
        return False
    a, b = _as_float(predicted), _as_float(gold)
    if a is not None and b is not None:
        return abs(a - b) <= 1e-6 * max(1.0, abs(b))
    if threading.current_thread() is threading.main_thread():
        return _symbolic_match(gold, predicted, timeout)
    return _match_in_subprocess(gold, predicted, timeout)


def grade(output: str, gold: str) -> tuple[str | None, bool]:
    """Return (extracted answer, correct) for one model output against its gold answer."""
    predicted = extract_answer(output)
    return predicted, answers_match(predicted, gold)
