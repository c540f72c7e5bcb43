"""Answer extraction and grading for every accuracy upft-ray reports.

``grade(output, gold)`` finds the final answer (:mod:`.extract`) and compares it with the gold answer
(:mod:`.compare`); ``grade_letter`` does the same for multiple-choice letters (:mod:`.letters`). Both
return a :class:`Graded`: the answer found, whether it is correct, and a ``status`` saying whether the
answer was ``missing``, ``unparsable``, ``timeout`` or ``ok``. The evaluation adds ``error`` for a row
whose grading raised (``upft_ray.evaluation.finish``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from upft_ray.grading.compare import MISSING, OK, TIMEOUT, UNPARSABLE, compare, is_text
from upft_ray.grading.extract import extract_answer, last_boxed
from upft_ray.grading.letters import find_letter
from upft_ray.grading.normalize import clean

ERROR = "error"  # grading raised (the evaluation records the exception class)
STATUSES = (OK, MISSING, UNPARSABLE, TIMEOUT, ERROR)


@dataclass(frozen=True)
class Graded:
    """One graded answer: what was extracted (None when nothing), whether it is correct, and the status."""
    answer: str | None
    correct: bool
    status: str
    error: str = ""  # the exception class when grading raised (status "error")


def answers_match(predicted: str | None, gold: str, timeout: float = 5) -> bool:
    """Return True when the extracted answer ``predicted`` is the gold answer (see :func:`.compare.compare`);
    a comparison past ``timeout`` seconds is False."""
    return compare(predicted, gold, timeout)[0]


def grade(output: str, gold: str, timeout: float = 5) -> Graded:
    """Return Graded(extracted answer, correct) with its status for one model output against its gold.

    A textual gold (a name, a word) also takes an "answer is" clause made of words as the answer."""
    predicted = extract_answer(output or "", words=is_text(clean(str(gold))))
    correct, status = compare(predicted, gold, timeout)
    return Graded(predicted, correct, status)


def grade_letter(output: str, gold: str) -> Graded:
    """Return Graded(letter, letter == gold) with its status for a multiple-choice output."""
    letter, status = find_letter(output)
    return Graded(letter, letter is not None and letter == str(gold).strip().upper(), status)


def grade_safely(output: str, gold: str, grader: Callable[[str, str], Graded] = None) -> Graded:
    """Return ``grader(output, gold)`` (default :func:`grade`); never raises: a grader that raises on this
    answer gives Graded(None, False, "error") with the exception's class in ``error``."""
    try:
        return (grader or grade)(output, gold)
    except Exception as err:  # noqa: BLE001 -- one answer's failure costs that answer only
        return Graded(None, False, ERROR, type(err).__name__)


__all__ = ["ERROR", "Graded", "STATUSES", "grade_safely", "answers_match", "extract_answer", "grade", "grade_letter", "last_boxed"]
