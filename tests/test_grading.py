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
    # integers with commas, signs and trailing text
    ("\\boxed{1,000,000}", "1000000", True),
    ("The total is 12,345 dollars.", "12345", True),
    ("\\boxed{-3}", "-3", True),
    ("\\boxed{3}", "-3", False),
    ("We get 42 apples.", "42", True),
    ("We get 42 apples.", "24", False),
    # fractions vs decimals
    ("\\boxed{0.25}", "\\frac{1}{4}", True),
    ("\\boxed{\\frac{2}{4}}", "\\frac{1}{2}", True),
    ("\\boxed{\\tfrac{1}{3}}", "\\frac{1}{3}", True),
    ("\\boxed{1/3}", "\\frac{1}{3}", True),
    ("\\boxed{0.33}", "\\frac{1}{3}", False),
    ("\\boxed{\\frac{3}{2}}", "1.5", True),
    ("\\boxed{\\dfrac{7}{8}}", "0.875", True),
    # percentages
    ("\\boxed{10\\%}", "10", True),
    ("\\boxed{50\\%}", "0.5", True),
    # units and text around the number
    ("\\boxed{5 \\text{ cm}}", "5", True),
    ("\\boxed{\\$18}", "18", True),
    ("\\boxed{90^\\circ}", "90", True),
    # nested braces and LaTeX expressions
    ("\\boxed{\\frac{\\sqrt{3}}{2}}", "\\frac{\\sqrt{3}}{2}", True),
    ("\\boxed{2\\sqrt{2}}", "\\sqrt{8}", True),
    ("\\boxed{\\pi}", "\\pi", True),
    ("\\boxed{2\\pi}", "\\pi", False),
    ("\\boxed{x+1}", "1+x", True),
    # sets and intervals
    ("\\boxed{\\{3, 1, 2\\}}", "\\{1,2,3\\}", True),
    ("\\boxed{\\{1,2\\}}", "\\{1,2,3\\}", False),
    ("\\boxed{[0, \\infty)}", "[0,\\infty)", True),
    ("\\boxed{(0, 1)}", "[0,1]", False),
    # several boxed answers: the last one counts
    ("\\boxed{1}, \\boxed{2}, \\boxed{3}", "3", True),
    ("\\boxed{3}, then corrected to \\boxed{4}", "3", False),
    # no answer at all
    ("I am not sure.", "7", False),
    ("The answer is unknown.", "7", False),
    # malformed LaTeX: never raises
    ("\\boxed{\\frac{1}{}}", "1", False),
    ("\\boxed{\\sqrt{}}", "2", False),
    ("\\boxed{)(}", "1", False),
    ("\\boxed{\\left( 1 \\right.}", "2", False),
    ("$$$$", "1", False),
    # answer stated in words, then the number
    ("So the answer is 15.", "15", True),
    ("Therefore, the answer is $\\frac{5}{6}$.", "\\frac{5}{6}", True),
    ("Final answer: 8", "8", True),
    ("\\boxed{\\frac{1}{2}+\\frac{1}{3}}", "\\frac{5}{6}", True),
    ("\\boxed{0.5}", "\\frac{1}{3}", False),
    ("\\boxed{3.0}", "3", True),
    ("x is \\boxed{\\{1,2\\}} or so", "\\{1,2\\}", True),
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


def test_pathological_answer_is_false_within_the_timeout():
    import time

    start = time.time()
    assert answers_match("3^{3^{3^{3^{3}}}}", "2", timeout=2) is False
    assert time.time() - start < 10


def test_grading_off_the_main_thread_keeps_a_deadline():
    import threading
    import time

    out = {}

    def worker():
        start = time.time()
        out["slow"] = answers_match("3^{3^{3^{3^{3}}}}", "2", timeout=2)
        out["slow_s"] = time.time() - start
        out["ok"] = answers_match("\\frac{1}{2}", "0.5")

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(60)
    assert out == {"slow": False, "slow_s": out["slow_s"], "ok": True} and out["slow_s"] < 30
