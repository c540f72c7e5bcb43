"""Answer extraction and equivalence on the kinds of output small models write."""

import pytest

from upft_ray.grading import answers_match, extract_answer, grade, last_boxed

CASES = [
    ("The answer is \\boxed{12}.", "12", True),
    ("\\boxed{\\frac{1}{2}}", "0.5", True),
    ("\\boxed{\\dfrac{3}{4}}", "\\frac{3}{4}", True),
    ("first \\boxed{2} then \\boxed{5}", "5", True),
    ("first \\boxed{5} then \\boxed{2}", "5", False),
    ("So she has 1,234 apples.", "1234", True),
    ("3 + 4 = 7. So Tom has 7 apples now.", "7", True),
    ("The answer is: 13", "13", True),
    ("The answer is 13 apples, not 14.", "13", True),
    ("no number at all", "3", False),
    ("", "3", False),
    ("\\boxed{\\{1,2\\}}", "\\{2,1\\}", True),
    ("\\boxed{(1, 3]}", "(1,3]", True),
    ("\\boxed{x^{2}}", "x^2", True),
    ("\\boxed{\\frac{1}{2}", "0.5", False),  # unbalanced box: no boxed answer; final number 2 is wrong
    ("total is -5", "-5", True),
    ("\\boxed{\\sqrt{4}}", "2", True),
    ("it is 7.0", "7", True),
    ("\\boxed{}", "1", False),
]


@pytest.mark.parametrize("output,gold,expected", CASES)
def test_grade(output, gold, expected):
    assert grade(output, gold)[1] is expected


def test_last_boxed_matches_nested_braces():
    assert last_boxed("a \\boxed{\\frac{a}{b^{2}}} b") == "\\frac{a}{b^{2}}"
    assert last_boxed("none") is None


def test_empty_gold_is_never_correct():
    assert answers_match("3", "") is False
    assert extract_answer("") is None
