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
        numbers = _NUMBER.findall(candidate)
        return numbers[0].replace(",", "") if numbers else candidate
    numbers = _NUMBER.findall(text)
    return numbers[-1].replace(",", "").rstrip(".") if numbers else None


def _as_float(text: str) -> float | None:
    try:
        return float(text.replace(",", "").strip().rstrip("."))
    except ValueError:
        return None


def answers_match(predicted: str | None, gold: str) -> bool:
    """Return True when ``predicted`` equals ``gold`` numerically or symbolically (math-verify)."""
    if predicted is None or not str(gold).strip():
        return False
    a, b = _as_float(predicted), _as_float(gold)
    if a is not None and b is not None:
        return abs(a - b) <= 1e-6 * max(1.0, abs(b))
    from math_verify import parse, verify

    # math-verify times out with signal.alarm, which only works on the main thread.
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    try:
        gold_parsed = parse(f"${gold}$", parsing_timeout=timeout)
        pred_parsed = parse(f"${predicted}$", parsing_timeout=timeout)
        return bool(gold_parsed and pred_parsed and verify(gold_parsed, pred_parsed, timeout_seconds=timeout))
    except Exception:  # math-verify raises on some malformed LaTeX; that answer is simply wrong
        return False


def grade(output: str, gold: str) -> tuple[str | None, bool]:
    """Return (extracted answer, correct) for one model output against its gold answer."""
    predicted = extract_answer(output)
    return predicted, answers_match(predicted, gold)
