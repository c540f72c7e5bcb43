"""What is extracted as the answer, and the status each answer gets."""

import pickle

import pytest

from upft_ray.grading import Graded, answers_match, extract_answer, grade, grade_letter, last_boxed


@pytest.mark.parametrize("output,answer", [
    ("The answer is 5 + 7 = 12.", "12"),
    ("The answer is 1.5 \\times 10^6 people.", "1.5 \\times 10^6"),
    ("The answer is 3x.", "3x"),
    ("The answer is 5. No: the answer is 7.", "7"),
    ("The answer is \\$18.", "18"),
    ("The answer is **42**.", "42"),
    ("The answer is $x = \\frac{1}{2}$.", "\\frac{1}{2}"),
    ("I ate 1/2 of a pizza", "1/2"),
    ("There were 1.5e6 people", "1.5e6"),
    ("It dropped to -5 degrees", "-5"),
    ("We get 5 - 3 = 2", "2"),
    ("So the total is $2^{10}$.", "2^{10}"),
    ("Total: 12,345 apples", "12,345"),
    ("first \\boxed{2} then \\fbox{5}", "5"),
    ("\\boxed{\\frac{a}{b^{2}}}", "\\frac{a}{b^{2}}"),
])
def test_extracted_answer(output, answer):
    assert extract_answer(output) == answer


@pytest.mark.parametrize("output", ["", "no number", "\\boxed{12", "The answer is 12. \\boxed{}", "\\boxed{ }",
                                    "\\boxed{3} and then \\boxed{"])
def test_no_answer(output):
    assert extract_answer(output) is None
    assert grade(output, "12").status == "missing"


def test_last_boxed():
    assert last_boxed("a \\boxed{\\frac{a}{b^{2}}} b") == "\\frac{a}{b^{2}}"
    assert last_boxed("none") is None and last_boxed("\\boxed{1") is None and last_boxed("\\boxed{}") is None


def test_statuses():
    assert grade("\\boxed{12}", "12") == Graded("12", True, "ok")
    assert grade("\\boxed{13}", "12").status == "ok"
    assert grade("\\boxed{twelve}", "12").status == "unparsable"
    assert grade("\\boxed{\\frac{1}{}}", "1").status == "unparsable"
    assert grade_letter("\\boxed{B, C}", "B").status == "unparsable"
    assert grade_letter("I do not know", "B").status == "missing"


def test_graded_names_its_fields_and_pickles():
    graded = grade("\\boxed{3}", "3")
    assert (graded.answer, graded.correct, graded.status) == ("3", True, "ok")
    assert pickle.loads(pickle.dumps(Graded("3", False, "timeout"))) == Graded("3", False, "timeout")


def test_empty_gold_is_never_correct():
    assert answers_match("3", "") is False and answers_match("", "") is False
    assert answers_match(None, "3") is False
