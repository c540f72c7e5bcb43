"""Answer extraction and grading for every accuracy upft-ray reports.

``grade(output, gold)`` finds the final answer (:mod:`.extract`) and compares it with the gold answer
(:mod:`.compare`); ``grade_letter`` does the same for multiple-choice letters (:mod:`.letters`). Both
return a :class:`Graded` ``(answer, correct)`` pair whose ``status`` says whether the answer was
``missing``, ``unparsable``, ``timeout`` or ``ok``."""

from __future__ import annotations

from upft_ray.grading.compare import MISSING, OK, TIMEOUT, UNPARSABLE, compare, is_text
from upft_ray.grading.extract import extract_answer, last_boxed
from upft_ray.grading.letters import find_letter
from upft_ray.grading.normalize import clean

STATUSES = (OK, MISSING, UNPARSABLE, TIMEOUT)


class Graded(tuple):
    """``(answer, correct)``, unpacking as before, with ``.status``: ok | missing | unparsable | timeout."""

    def __new__(cls, answer: str | None, correct: bool, status: str):
        graded = super().__new__(cls, (answer, correct))
        graded.status = status
        return graded

    def __getnewargs__(self):
        return self[0], self[1], self.status

    def __repr__(self) -> str:
        return f"Graded(answer={self[0]!r}, correct={self[1]}, status={self.status!r})"


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


__all__ = ["Graded", "STATUSES", "answers_match", "extract_answer", "grade", "grade_letter", "last_boxed"]
