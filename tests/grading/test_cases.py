"""Every case of the table in grading_cases.py, through the graders grade_batch calls."""

import pytest
from grading_cases import LETTER_CASES, MATH_CASES

from upft_ray.grading import grade, grade_letter


def _ids(cases):
    return [f"{cls}-{i}" for i, (cls, *_rest) in enumerate(cases)]


@pytest.mark.parametrize("cls,output,gold,expected", MATH_CASES, ids=_ids(MATH_CASES))
def test_math_case(cls, output, gold, expected):
    assert grade(output, gold).correct is expected


@pytest.mark.parametrize("cls,output,gold,expected", LETTER_CASES, ids=_ids(LETTER_CASES))
def test_letter_case(cls, output, gold, expected):
    assert grade_letter(output, gold).correct is expected


def test_the_table_covers_every_class_of_issue_17():
    classes = {cls for cls, *_ in MATH_CASES + LETTER_CASES}
    assert {"tolerance", "commas", "answer-is-expression", "last-answer-is", "answer-is-markup", "broken-box",
            "fallback", "letters", "formats", "text", "symbolic", "letters-prose", "letters-corrected",
            "letters-not-answers"} <= classes
    assert len(MATH_CASES) + len(LETTER_CASES) >= 150
    for cls in classes:  # each class holds both verdicts, so a grader that says always yes or no fails
        assert {expected for c, *_, expected in MATH_CASES + LETTER_CASES if c == cls} == {True, False}, cls
