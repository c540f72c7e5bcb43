"""The multiple-choice letter reader (grading/letters.py, letters_prose.py): the status of each kind of
answer, no raising on any text, and no regex that backtracks on long prose. The verdicts live in the
table, grading_cases.py (classes letters, letters-prose, letters-corrected, letters-not-answers)."""

import random
import string
import time

import pytest

from upft_ray.grading import STATUSES, Graded, grade_letter, grade_safely
from upft_ray.grading.letters import find_letter
from upft_ray.grading.letters_prose import last_statement, retracted


@pytest.mark.parametrize("output,expected", [
    ("Therefore, B) 5 m/s is the right choice", Graded("B", True, "ok")),
    ("So the correct option is the second one.", Graded("B", True, "ok")),
    ("The answer is (A)... no, correction: (C)", Graded("C", False, "ok")),
    ("The answer is either B or C.", Graded(None, False, "unparsable")),  # a statement, but of two letters
    ("The answer is B. Hmm, actually B is wrong.", Graded(None, False, "missing")),  # taken back: none stands
    ("The answer is B. Wait, that's not right.", Graded(None, False, "missing")),
    ("It could be B or C.", Graded(None, False, "missing")),  # a hedge states nothing
    ("If the answer is B, then the energy doubles.", Graded(None, False, "missing")),
    ("The answer is vitamin C.", Graded(None, False, "missing")),
    ("", Graded(None, False, "missing")),
])
def test_grade_letter_statuses(output, expected):
    assert grade_letter(output, "B") == expected
    assert expected.status in STATUSES


def test_last_statement_and_retraction():
    text = "I initially thought B, but on reflection the answer is C. Later: B is wrong."
    letter, end = last_statement(text)
    assert letter == "C" and text[end - 1] == "C"
    assert not retracted(text, end, "C") and retracted("The answer is B. B is wrong.", 15, "B")
    assert not retracted("The answer is B. Is B wrong? If B is wrong, D fails.", 15, "B")
    assert last_statement("Compare with B; unlike option D.") is None


def test_never_raises_on_any_text():
    rng = random.Random(0)
    alphabet = string.ascii_letters[:8] + "ABCD()[]{}*_$\\,.;:!? -\n" + "\u2014"
    words = ["answer", "is", "option", "choice", "not", "but", "wait", "no", "so", "the", "second", "one",
             "correct", "wrong", "boxed", "\\boxed{", "}", "as", "if", "B", "(C)", "**", "-", "corresponds to"]
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(40)))
        text += " ".join(rng.choice(words) for _ in range(rng.randrange(12)))
        letter, status = find_letter(text)
        assert status in ("ok", "missing", "unparsable") and (letter is None) == (status != "ok")
        assert grade_safely(text, "B", grade_letter).status != "error"


@pytest.mark.parametrize("text", [
    "So" + " " * 50_000 + "x", "so" + ", " * 25_000 + "x", "Answer:" + "*" * 50_000, ", " * 25_000 + "B as the",
    "(B) " * 12_500, "The answer is B." + " wait," * 8_000, "matches" + " " * 50_000, "not B " * 8_000,
])
def test_long_runs_take_linear_time(text):
    start = time.time()
    find_letter(text)
    assert time.time() - start < 5
