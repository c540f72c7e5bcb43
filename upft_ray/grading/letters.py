"""Multiple-choice letters (GPQA): a letter only from an explicit statement, and only one.

In order: the last ``\\boxed{}``; else the last statement ("the answer is (B)", "Answer: B", "option B is
correct", "I choose B"); else a final line that is a lone option (``B``, ``(B)``, ``(B) 5 m/s``). A letter
that a later sentence merely mentions ("... B. A quick check", "rules out D") never overrides, an English
"a" is not option A, and two letters ("B and C", ``\\boxed{B, C}``) are no answer."""

from __future__ import annotations

import re

from upft_ray.grading.extract import boxed

_FILLER = r"(?:\s|\*|_|:|\$|\\\(|\\text(?:bf)?\{|\\mathrm\{|\[|option|choice|letter)*"
_LETTER = r"(?<![\w'])(\()?([A-Da-d])(\))?"
_STATEMENTS = [
    re.compile(r"(?:answer|option|choice)s?[*_]*\s*(?:(?:is|was|would\s+be|should\s+be|must\s+be)(?![\w'])|:)"
               r"(?:\s+(?:therefore|thus|then|hence|clearly|indeed|definitely|certainly|probably|(?:most\s+)?likely))?"
               + _FILLER + _LETTER,
               re.IGNORECASE),
    re.compile(r"(?:\b(?:option|choice)\s+)?" + _LETTER + r"\s+(?:is|would\s+be|seems)\s+(?:the\s+)?"
               r"(?:correct|right|best|answer|true)\b", re.IGNORECASE),
    re.compile(r"\b(?:choose|chose|pick|select|go\s+with|going\s+with)\s+" + _FILLER + _LETTER, re.IGNORECASE),
]
_MORE_LETTERS = re.compile(r"[)*}$\s]*(?:(?:\s*(?:\band\b|\bor\b|&|/|\+)\s*)|\s*,\s*(?=\(?[A-J]\)?[\s)*.,$}]*"
                           r"(?:$|\n|\band\b|\bor\b)))\(?[A-J]\)?(?![\w'])")
_CONNECTIVE = ("because", "since", "as", "is", "it", "which", "for", "from", "due", "given", "with", "here",
               "this", "that", "so", "and", "or", "the", "in", "on")
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


def _stated(match: re.Match) -> str | None:
    """The letter of a statement match, or None when it is an English word or one of several letters."""
    opened, letter, closed = match.group(1), match.group(2), match.group(3)
    end = match.end(3) if closed else match.end(2)
    after = match.string[end:end + 80]
    if re.match(r"[\w']", after):
        return None
    bracketed = bool(opened and closed) or match.string[max(0, match.start(2) - 2):match.start(2)].endswith(
        ("**", "{", "$"))
    if not bracketed:
        if letter.islower() and (letter == "a" or not re.match(r"\s*(?:[.,;:!)\n]|$)", after)):
            return None  # "the answer is a tricky one"
        word = re.match(r"\s+([a-z]+)", after)
        if letter == "A" and word and word.group(1) not in _CONNECTIVE:
            return None  # "The answer is A tricky ..."
    if _MORE_LETTERS.match(after):
        return ""  # "B and C", "(B), (C)": several letters are no answer
    return letter.upper()


def find_letter(output: str) -> tuple[str | None, str]:
    """Return (letter, status) for a multiple-choice output; status ``ok``, ``missing`` (nothing
    stated, or an unclosed/empty box) or ``unparsable`` (a box or statement that is not one letter)."""
    text = output or ""
    has_box, content = boxed(text)
    if has_box:
        if content is None:
            return None, "missing"
        letter = _box_letter(content)
        return (letter, "ok") if letter else (None, "unparsable")
    last = None
    for pattern in _STATEMENTS:
        for m in pattern.finditer(text):
            if last is None or m.start() > last.start():
                if (letter := _stated(m)) is not None:
                    last, found = m, letter
    if last is not None:
        return (found, "ok") if found else (None, "unparsable")
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if lines and (m := _LONE_LINE.fullmatch(lines[-1])):
        return next(g for g in m.groups() if g).upper(), "ok"
    return None, "missing"
