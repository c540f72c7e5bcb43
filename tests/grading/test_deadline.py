"""Pathological outputs stay within the per-answer deadline, on the main thread and off it."""

import threading
import time

from upft_ray.grading import Graded, answers_match, grade, grade_letter

TOWER = "3^{3^{3^{3^{3}}}}"


def test_tower_of_exponents_times_out_on_the_main_thread():
    start = time.time()
    graded = grade(f"\\boxed{{{TOWER}}}", "2", timeout=1)
    assert graded == Graded(TOWER, False, "timeout")
    assert time.time() - start < 5


def test_grading_off_the_main_thread_keeps_a_deadline():
    out = {}

    def worker():
        start = time.time()
        out["slow"] = grade(f"\\boxed{{{TOWER}}}", "2", timeout=1)
        out["slow_s"] = time.time() - start
        out["ok"] = answers_match("\\frac{1}{2}", "0.5")
        out["symbolic"] = answers_match("2\\sqrt{2}", "\\sqrt{8}")

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(60)
    assert out["slow"].status == "timeout" and out["slow_s"] < 30
    assert out["ok"] is True and out["symbolic"] is True


def test_huge_outputs_are_read_in_linear_time():
    cases = [
        ("x " * 500_000 + "\\boxed{5}", "5", True),        # 1 MB of text
        ("\\boxed{1}" * 5000 + "\\boxed{2}", "2", True),   # thousands of boxes
        ("\\boxed{" * 5000, "1", False),                    # thousands of unclosed boxes
        ("The answer is 4. " * 50_000, "4", True),          # the phrase repeated all the way down
        ("$" * 100_000, "1", False),
        ("{" * 100_000 + "12", "12", True),
        ("The answer is " + "1, " * 20_000, "1", False),
    ]
    start = time.time()
    for output, gold, expected in cases:
        assert grade(output, gold).correct is expected
    assert time.time() - start < 5


def test_a_deadline_during_the_first_import_leaves_later_answers_intact():
    """math-verify and sympy load before the alarm is armed: a fresh process whose first comparison
    times out still grades the next one (a cut-short import would break every later answer)."""
    import subprocess
    import sys

    code = ("from upft_ray.grading import grade\n"
            "grade('\\\\boxed{2\\\\sqrt{2}}', '\\\\sqrt{8}', timeout=0.3)\n"
            "cases = [('\\\\boxed{2\\\\sqrt{2}}', '\\\\sqrt{8}'), ('\\\\boxed{x^2-1}', '(x-1)(x+1)'),\n"
            "         ('\\\\boxed{\\\\binom{5}{2}}', '10')]\n"
            "print(*[grade(output, gold).correct for output, gold in cases])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["True", "True", "True"], out.stderr[-2000:]


def test_no_regex_backtracks_on_long_runs():
    """Runs that made an earlier unit and lone-line pattern backtrack exponentially or quadratically."""
    start = time.time()
    assert grade("\\boxed{1 " + "a" * 5000 + "1}", "1").correct is False
    assert grade_letter("x\n" + "*" * 100_000 + "Z", "A").correct is False
    assert time.time() - start < 5
