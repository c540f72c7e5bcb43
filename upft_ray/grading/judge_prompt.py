"""The LLM judge's prompt and verdict parser: Omni-Judge's (KbsdJames/Omni-Judge), as the official UPFT
evaluation calls it (1KE-JI/UPFT ``inference/eval.py``, ``_judge``).

The official code builds each judge prompt with ``tokenizer.get_context(problem, reference, response)``
of Omni-Judge's tokenizer (``trust_remote_code``), generates greedily (max 300 tokens) and reads the
verdict with ``tokenizer.parse_response(text)``; an answer counts as correct when the rule (math_equal)
OR the judge says TRUE. That tokenizer code is not available offline; the text here is taken from two
public copies of its ``get_context`` / ``parse_response`` (an ``OmniJudge`` class and an Omni-MATH
batch script that calls Omni-Judge "with the same prompt"), which agree word for word. Uncertain:

- whether the hub tokenizer's ``get_context`` adds the one-shot example (both copies do; a shorter
  description of it does not) and returns the chat-template rendering with ``"## Student Final
  Answer"`` appended (the class's commented-out return does; the official code passes the result as a
  text prompt to vLLM, so it must be rendered text). Both are followed here: ``judge_messages`` is the
  conversation, ``JUDGE_PREFILL`` the text the judge's answer is continued from;
- the box in the instructions is written ``"\\\\\\\\boxed{}"`` in the Python source, so the prompt holds
  two backslashes (``\\\\boxed{}``), kept as the model was trained;
- the official prompt string is tokenized with special tokens added (a second BOS under Llama 3's
  template); upft-ray renders it without (``upft_ray.engine.prompts.render_prompt``).

``parse_verdict`` mirrors ``parse_response`` and never raises: a report without the ``## Equivalence
Judgement`` / ``## Justification`` sections, or with a judgement other than TRUE/FALSE, is
``unparsable`` (the official code then counts the answer as not correct by the judge).
"""

from __future__ import annotations

from dataclasses import dataclass

JUDGE_OK = "ok"
JUDGE_UNPARSABLE = "unparsable"
JUDGE_PREFILL = "## Student Final Answer"  # the judge's report is generated on from here

SYSTEM = "You are an experienced teacher in the field of MATHEMATICS."
INSTRUCTIONS = (
    "# OBJECTIVE #\nYou are tasked with evaluating the correctness of a student's answer. Below, you are provided "
    "with a problem, a reference answer, and a student's answer. You should assess whether the student's answer "
    "captures the same meaning as the reference answer, even when expressed with different wording or format.\n\n"
    "Your tasks include:\nA. Identify Mathematical or Notational Equivalence.\nB. Conclude with a brief explanation "
    "as to why the student's output is correct or incorrect.\n\n# RESPONSE: MARKDOWN REPORT #\n"
    "## Student Final Answer\n[Extract the student's final answer, which is enclosed in \"\\\\boxed{}\".]\n"
    "## Equivalence Judgement\n[Whether the student's answer share the same meaning with the reference answer. "
    "(TRUE or FALSE)]\n## Justification\n[Conclude with a brief explanation as to why the student's answer is "
    "correct or incorrect.]\n\n\n# ATTENTION #\n - The reference answer is ALWAYS correct. You should carefully "
    "judge whether the student gives the same answer as reference answer.\n - The answer is FALSE even if the "
    "student's final answer almost correct with a minor mistakes.\n - The answer is contained within the \"boxed\" "
    "section, so you can focus solely on comparing the content in the student's answer box with the reference "
    "answer, without needing to consider the intermediate steps.\n - Add \"=== report over ===\" at the end of the "
    "report.")
EXAMPLE_QUESTION = ("The numbers $1447$ , $1005$ and $1231$ have something in common: each is a $4$ -digit number "
                    "beginning with $1$ that has exactly two identical digits. How many such numbers are there?")
EXAMPLE_REFERENCE = "432"
EXAMPLE_SOLUTION = (
    "To determine how many 4-digit numbers beginning with 1 have exactly two identical digits, we need to consider "
    "the structure of these numbers. A number of this form can be represented as \\(1abc\\), where \\(a\\), \\(b\\), "
    "and \\(c\\) are digits from 0 to 9, and exactly one of the digits \\(a\\), \\(b\\), or \\(c\\) is 1, while the "
    "other two are different from each other and different from 1.\n\nWe can break down the problem into the "
    "following steps:\n\n1. **Choose the digit that is 1**: There are 3 positions (a, b, c) where the digit 1 can "
    "be placed. So, there are 3 choices for the position of the digit 1.\n\n2. **Choose the other two digits**: The "
    "remaining two digits must be different from each other and different from 1. Therefore, we have 9 choices for "
    "the first of these two digits (0-9 except 1) and 8 choices for the second digit (0-9 except 1 and the first "
    "digit). This gives us \\(9 \\times 8 = 72\\) choices for the other two digits.\n\nCombining these choices, the "
    "total number of 4-digit numbers beginning with 1 that have exactly two identical digits is:\n"
    "\\[3 \\times 72 = 216.\\]\n\nThus, the number of such numbers is \\(\\boxed{216}\\).")
EXAMPLE_REPORT = (
    "## Student Final Answer\n216\n\n## Equivalence Judgement\nFALSE\n\n## Justification\nThe student's answer of "
    "216 is incorrect in the context of the problem, which asks for the total count of 4-digit numbers beginning "
    "with 1 that have exactly two identical digits. The reference answer is 432.\nIn the student's solution, they "
    "consider only cases where the digit '1' is one of the identical digits. However, the problem also includes the "
    "scenario where the identical digits could be different from '1'. Thus, the student's calculation does not "
    "account for all valid configurations. The discrepancy in figures indicates that the student's answer does not "
    "share the same meaning as the reference answer.\n\n=== report over ===")


@dataclass(frozen=True)
class Verdict:
    """One judge report read: ``status`` ok (``correct`` is the judgement) or unparsable (``correct`` None);
    ``answer`` is the student's final answer as the judge extracted it ("" when not found)."""
    status: str
    correct: bool | None
    answer: str


def case_text(question: str, reference: str, solution: str) -> str:
    """Return the user message presenting one case to the judge (fields stripped, as Omni-Judge does)."""
    return (f"**Question**:\n{question.strip()}\n\n**Reference Answer**\n{reference.strip()}\n\n"
            f"**Student Solution**:\n{solution.strip()}\n\n")


def judge_messages(question: str, reference: str, solution: str) -> list[dict]:
    """Return the judge's chat messages for one answer: instructions, the one-shot example, the case. The
    judge model's chat template renders them (with the generation prompt), and ``JUDGE_PREFILL`` follows."""
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": INSTRUCTIONS},
            {"role": "assistant", "content": "OK."},
            {"role": "user", "content": case_text(EXAMPLE_QUESTION, EXAMPLE_REFERENCE, EXAMPLE_SOLUTION)},
            {"role": "assistant", "content": EXAMPLE_REPORT},
            {"role": "user", "content": case_text(question, reference, solution)}]


def parse_verdict(text: str) -> Verdict:
    """Return the verdict of a judge report (the text generated after ``JUDGE_PREFILL``, or a whole report);
    never raises. Follows Omni-Judge's ``parse_response``: the answer is the text up to ``## Equivalence
    Judgement``, the judgement what lies between it and ``## Justification``, exactly TRUE or FALSE."""
    text = text if isinstance(text, str) else ""
    start = text.index(JUDGE_PREFILL) + len(JUDGE_PREFILL) if JUDGE_PREFILL in text else 0
    judgement_head, justification_head = "## Equivalence Judgement", "## Justification"
    if judgement_head not in text:
        return Verdict(JUDGE_UNPARSABLE, None, "")
    answer = text[start:text.index(judgement_head)].strip()
    if justification_head not in text:
        return Verdict(JUDGE_UNPARSABLE, None, answer)
    judgement = text[text.index(judgement_head) + len(judgement_head):text.index(justification_head)].strip()
    if judgement not in ("TRUE", "FALSE"):
        return Verdict(JUDGE_UNPARSABLE, None, answer)
    return Verdict(JUDGE_OK, judgement == "TRUE", answer)
