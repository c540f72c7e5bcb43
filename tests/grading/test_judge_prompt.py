"""The LLM judge's prompt (Omni-Judge's, as the official UPFT evaluation sends it) and its verdict parser."""

import pytest

from upft_ray.grading.judge_prompt import (
    EXAMPLE_REPORT,
    INSTRUCTIONS,
    JUDGE_OK,
    JUDGE_PREFILL,
    JUDGE_UNPARSABLE,
    Verdict,
    judge_messages,
    parse_verdict,
)


def test_the_conversation_is_instructions_then_the_one_shot_example_then_the_case():
    messages = judge_messages("  What is 2+2?\n", " 4 ", "2+2 = \\boxed{4}\n\n")
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert messages[0]["content"] == "You are an experienced teacher in the field of MATHEMATICS."
    assert messages[2]["content"] == "OK."
    assert messages[4]["content"] == EXAMPLE_REPORT and parse_verdict(EXAMPLE_REPORT) == Verdict(JUDGE_OK, False, "216")
    assert messages[3]["content"].startswith("**Question**:\nThe numbers $1447$ , $1005$")
    # each field stripped; the layout of Omni-Judge's get_context, trailing blank line included
    assert messages[5]["content"] == ("**Question**:\nWhat is 2+2?\n\n**Reference Answer**\n4\n\n"
                                      "**Student Solution**:\n2+2 = \\boxed{4}\n\n")


def test_the_instructions_keep_the_trained_text():
    assert INSTRUCTIONS.startswith("# OBJECTIVE #\nYou are tasked with evaluating the correctness")
    assert 'enclosed in "\\\\boxed{}".]\n## Equivalence Judgement\n' in INSTRUCTIONS  # two backslashes, as trained
    assert "(TRUE or FALSE)]\n## Justification\n" in INSTRUCTIONS
    assert INSTRUCTIONS.endswith(' - Add "=== report over ===" at the end of the report.')
    assert JUDGE_PREFILL == "## Student Final Answer"


@pytest.mark.parametrize("text, verdict", [
    # what the judge generates after the prefill
    ("\n12\n\n## Equivalence Judgement\nTRUE\n\n## Justification\nSame.\n\n=== report over ===",
     Verdict(JUDGE_OK, True, "12")),
    ("\n$\\frac{1}{2}$\n\n## Equivalence Judgement\nFALSE\n\n## Justification\nNo.", Verdict(JUDGE_OK, False,
                                                                                       "$\\frac{1}{2}$")),
    # a whole report, prefill included
    ("## Student Final Answer\n7\n## Equivalence Judgement\n TRUE \n## Justification\n", Verdict(JUDGE_OK, True, "7")),
    # the first judgement counts when the model repeats itself
    ("\n4\n\n## Equivalence Judgement\nFALSE\n\n## Justification\nx\n\n## Equivalence Judgement\nTRUE\n",
     Verdict(JUDGE_OK, False, "4")),
    # unparsable: cut before the judgement, no justification heading, not exactly TRUE/FALSE, nothing at all
    ("\n12\n\n## Equivalence", Verdict(JUDGE_UNPARSABLE, None, "")),
    ("\n12\n\n## Equivalence Judgement\nTRUE", Verdict(JUDGE_UNPARSABLE, None, "12")),
    ("\n12\n## Equivalence Judgement\nTrue\n## Justification\n", Verdict(JUDGE_UNPARSABLE, None, "12")),
    ("\n12\n## Equivalence Judgement\nTRUE, mostly\n## Justification\n", Verdict(JUDGE_UNPARSABLE, None, "12")),
    ("## Justification\nfirst\n## Equivalence Judgement\nTRUE\n",
     Verdict(JUDGE_UNPARSABLE, None, "## Justification\nfirst")),
    ("", Verdict(JUDGE_UNPARSABLE, None, "")),
])
def test_parse_verdict_follows_omni_judges_parse_response(text, verdict):
    assert parse_verdict(text) == verdict


def test_parse_verdict_never_raises():
    for odd in (None, 3, b"## Equivalence Judgement", "\x00" * 5, "## Equivalence Judgement" * 3):
        assert parse_verdict(odd).status == JUDGE_UNPARSABLE
