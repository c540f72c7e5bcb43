"""Multiple-choice letters (GPQA): a letter only from an explicit statement, and only one.

In order: the last ``\\boxed{}``; else the last statement in prose (:mod:`.letters_prose`: "the answer is
(B)", "Answer: B", "option B is correct", "I choose B", "which corresponds to choice C", "not B but C", ...);
else a final line that is a lone option (``B``, ``(B)``, ``(B) 5 m/s``). A letter that a later sentence
merely mentions ("... B. A quick check", "rules out D") never overrides, an English "a" is not option A,
and two letters ("B and C", ``\\boxed{B, C}``) are no answer (``unparsable``). A statement that later text
takes back ("The answer is B. Hmm, actually B is wrong.", nothing stated after) leaves no answer: status
``missing``, as for an output that stops before answering (``unparsable`` is kept for a statement or box
that names no one letter). A box is final: prose after it neither overrides nor retracts it."""

from __future__ import annotations

import re

from upft_ray.grading.extract import boxed
from upft_ray.grading.letters_prose import last_statement, retracted

_LONE_LINE = re.compile(r"[\s*#>$`_]*(?:\\boxed\{[\s*]*)?(?:\(([A-Da-d])\)(?:\s.*)?|([A-D])\)(?:\s.*)?|"
                        r"([A-D])[.:]?)[\s*}$`_]*")


def _box_letter(content: str) -> str | None:
    """The one option letter a box holds (``B``, ``(B)``, ``\\text{B}``, ``B) 5 m/s``), or None."""
    inner = re.sub(r"\\(?:text|textbf|mathrm|mathbf)\s*\{([^{}]*)\}", r"\1", content).strip()
    bare = re.sub(r"[\s(){}*.:]", "", inner)
    if len(bare) == 1 and bare.isalpha() and bare.upper() <= "J":  # a boxed letter may name an option past D
        return bare.upper()
    m = re.fullmatch(r"\(?([A-D])[).:]\s+[^,&/]*", inner)
    return m.group(1) if m and not re.search(r"\b[A-D]\b", inner[m.end(1):]) else None


def _option(match: re.Match) -> str:
    """The letter a lone-option line match holds, upper case."""
    return next(g for g in match.groups() if g).upper()


def _lone_line(text: str) -> str | None:
    """The option letter when the last non-empty line of ``text`` is a lone option, else None; the last
    line of a list of options ("(A) 5 m/s" above "(B) 10 m/s") restates the options and answers nothing."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines or not (m := _LONE_LINE.fullmatch(lines[-1])):
        return None
    above = _LONE_LINE.fullmatch(lines[-2]) if len(lines) > 1 else None
    listed = " " in lines[-1].strip(" \t*#>$`_")  # "(B) 10 m/s" carries the option's text
    return None if above and listed and _option(above) != _option(m) else _option(m)


def find_letter(output: str) -> tuple[str | None, str]:
    """Return (letter, status) for a multiple-choice output; status ``ok``, ``missing`` (nothing stated,
    a statement taken back, or an unclosed/empty box) or ``unparsable`` (a box or statement that is not
    one letter)."""
    text = output or ""
    has_box, content = boxed(text)
    if has_box:
        if content is None:
            return None, "missing"
        letter = _box_letter(content)
        return (letter, "ok") if letter else (None, "unparsable")
    stated = last_statement(text)
    if stated is not None:
        letter, end = stated
        if not letter:
            return None, "unparsable"
        if not retracted(text, end, letter):
            return letter, "ok"
        text = text[end:]  # taken back: only a lone option line after it can still answer
    letter = _lone_line(text)
    return (letter, "ok") if letter else (None, "missing")
