"""Option letters stated in prose, read the way a careful human grader reads them (GPQA, options A-D).

A *statement* names one option as the answer: "the answer is (B)", "Final answer - C", "The best match is
D: ...", "the correct option is the second one, (B)", "option C is correct", "B) 5 m/s is the right choice",
"I choose B", "which corresponds to choice C", "This points to B as the answer", and corrections ("not B but
C", "no, correction: (C)", "Wait, actually D."). :func:`last_statement` finds the last one. These are no
statement: a letter only mentioned ("unlike option D", "compare with B"), an English "a"/"A", a letter
inside a word or formula ("vitamin C", "point A", "the C-H bond", "$x_A$"), a hypothetical ("if the answer
is B"), a hedge ("it could be B or C"); several letters ("either B or C") are a statement of no one letter.
:func:`retracted` says whether later text takes the statement back ("Hmm, actually B is wrong.")."""

from __future__ import annotations

import re

_I = re.IGNORECASE
_FILLER = r"(?:\s|\*|_|:|\$|\\\(|\\text(?:bf)?\{|\\mathrm\{|\[|option|choice|letter)*"
_LETTER = r"(?<![\w'])(?P<open>\()?(?P<letter>[A-Da-d])(?P<close>\))?"
_ADVERB = (r"(?:therefore|thus|then|hence|clearly|indeed|definitely|certainly|probably|(?:most\s+)?likely|actually|"
           r"really|now|instead|finally|obviously|evidently|surely|either)")
_BE = rf"(?:is|was|(?:would|should|must|will)(?:\s+{_ADVERB})?\s+be)(?![\w'])"
_ORDINALS = ("first", "second", "third", "fourth")  # "the second one" is option B
_NTH = r"the\s+(?:first|second|third|fourth)\s+(?:one|option|choice)\b"
_ORDINAL = _NTH.replace("(?:first", "(?P<ordinal>first")
_ANSWER_IS = (rf"(?:answer|option|choice|match|pick|guess)[*_]*\s*(?:{_BE}|[:=–—]|-(?=\s))(?:\s+{_ADVERB},?){{0,2}}")
# a letter standing alone after a lead-in ("so B.", "correction: (C) 2.5 eV"), not the subject of a clause
_ALONE = (r"(?=[\s*}$_]*(?:[.!;\n]|$)|(?<=\))\s+(?!(?:is|are|was|were|must|would|can|could|has|does|fails|and|or)"
          r"\b))")
_LEAD_IN = (r"(?:^|(?<=[.!?;:,\n]))[ \t]*(?:\*\*)?(?:correction|correcting\s+myself|I\s+mean|make\s+(?:that|it)|"
            r"scratch\s+that|rather|no|wait|actually|therefore|thus|hence|so)\b[\s,:;.\-–—]*+"
            r"(?:(?:it'?s|it\s+is)\s+)?(?:(?:actually|really)\s+)?")
_POINTS_TO = (r"\b(?:correspond(?:s|ing)?\s+to|match(?:es|ing)?|points?\s+to|pointing\s+to|(?:leaves?|leaving)"
              r"(?:\s+us\s+with)?|(?:which|this)\s+(?:is|gives|matches)|gives?|giving)\s+"
              r"(?=(?:the\s+)?(?:option|choice|answer|letter)\b|\(|\*\*|\$|\\text)(?:the\s+)?(?:answer\s+)?")

_STATEMENTS = [
    # "the answer is therefore (B)", "Final answer - C", "The best match is D", "option is the second one, (B)"
    re.compile(_ANSWER_IS + rf"(?:\s+{_NTH}\s*[,:;\-–—]?)?" + _FILLER + _LETTER, _I),
    # "the correct option is the second one." (no letter follows: the ordinal is the answer)
    re.compile(_ANSWER_IS + r"\s+" + _ORDINAL + r"(?![\s,:;*_$\-–—]*\(?(?-i:[A-D])(?![\w']))", _I),
    # "option C is correct", "B is the correct answer", "B) 5 m/s is the right choice"
    re.compile(r"(?:\b(?:option|choice)\s+)?" + _LETTER + r"\**(?(close)(?:\s+(?:[^\n;!?.(),]|\.(?=\d)){0,40}?)?)"
               r"\s+(?:is|would\s+be|must\s+be|seems(?:\s+to\s+be)?|appears\s+to\s+be)\s+(?:the\s+)?(?:only\s+)?"
               r"(?:correct|right|best|answer|true|most\s+plausible)\b", _I),
    # "I choose B", "I'd go with (D)", "settle on C"
    re.compile(r"\b(?:choose|chose|choosing|pick|picked|picking|select|selected|go\s+with|going\s+with|went\s+with|"
               r"settle\s+on|opt\s+for)\s+" + _FILLER + _LETTER, _I),
    # "This points to B as the answer", "That leaves option C as the only consistent choice"
    re.compile(r"(?:\b(?:to|take|taking|leaves|leaving|option|choice|letter|is)\s+|^|[,:;]\s*)" + _LETTER
               + r"\s+as\s+(?:the|our|my)\s+(?:[\w-]+\s+){0,2}?(?:answer|choice|option|pick)\b", _I | re.M),
    # "which corresponds to choice C", "we get 12 N, which is option (A)": a noun or a bracket must introduce it
    re.compile(_POINTS_TO + _FILLER + _LETTER, _I),
    # "no, correction: (C)", "Wait, actually D.", "So B."
    re.compile(_LEAD_IN + _FILLER + _LETTER + _ALONE, _I | re.M),
    # "not B but C", "it isn't B, it's C"
    re.compile(r"(?:\bnot|n't)\s+(?:option\s+|choice\s+)?\(?(?-i:[A-D])\)?\s*[,;]?\s*(?:but|it'?s|it\s+is)\s+"
               r"(?:rather\s+|actually\s+)?" + _FILLER + _LETTER, _I),
]
_MORE_LETTERS = re.compile(r"[)*}$\s]*(?:(?:\s*(?:\band\b|\bor\b|&|/|\+)\s*)|\s*,\s*(?=\(?[A-J]\)?[\s)*.,$}]*"
                           r"(?:$|\n|\band\b|\bor\b)))\(?[A-J]\)?(?![\w'])")
_CONNECTIVE = ("because", "since", "as", "is", "it", "which", "for", "from", "due", "given", "with", "here",
               "this", "that", "so", "and", "or", "the", "in", "on")
_HYPOTHETICAL = re.compile(r"\b(?:if|whether|unless|suppose|supposing|assuming|assume|(?:do|did|does)\s*n[o']t\s+"
                           r"think|doubt)\s+(?:that\s+)?(?:(?:the|my|our|we|I|you)\s+)?(?:[\w-]+\s+)?$"
                           r"|(?:\bnot|n't|\bnever)\s+$", _I)
_WRONG = (r"(?:wrong|incorrect|false|impossible|ruled\s+out|a\s+mistake|not\s+(?:right|correct|it|"
          r"the\s+(?:right\s+|correct\s+)?answer))(?![\w'])(?!\s*\?)")
_THAT_WRONG = r"(?:that|this|it|which)(?:'s|\s+is|\s+was)\s+(?:actually\s+|clearly\s+)?" + _WRONG
_INTERJECTIONS = r"[\s.,;:!)*\]}$]*+(?:(?:wait|hold\s+on|hmm+|oops|actually|no)\b[\s,.!:;\-–—]*+)"
_TAKEN_BACK = re.compile(  # right after the statement: "Wait, that is wrong as ...", "that is wrong.", "Hmm, no wait"
    _INTERJECTIONS + "+" + _THAT_WRONG + "|" + _INTERJECTIONS + r"*(?:" + _THAT_WRONG + r"(?=\s*(?:[.!;,\n]|$))"
    r"|scratch\s+that|(?:that|it)\s+can(?:not|'t)\s+be\s+right|(?:wait|hold\s+on)[\s,.!\-–—]+no\b(?![\w'])"
    r"|no,?\s+wait\b)", _I)


def _hypothetical(text: str, start: int) -> bool:
    """True when the words just before ``start`` make what follows a condition, a doubt or a denial ("if the
    answer is B", "I don't think option B is correct", "this doesn't match option C"), not a statement."""
    return bool(_HYPOTHETICAL.search(text[max(0, start - 60):start]))


def _stated(match: re.Match) -> str | None:
    """The letter a statement match names; "" when it names several letters; None when it is no statement
    (an English "a"/"A", a letter inside a word or formula, a hypothetical)."""
    if _hypothetical(match.string, match.start()):
        return None
    if "ordinal" in match.re.groupindex:
        return "ABCD"[_ORDINALS.index(match.group("ordinal").lower())]
    opened, letter, closed = match.group("open"), match.group("letter"), match.group("close")
    end = match.end("close") if closed else match.end("letter")
    after = match.string[end:end + 80]
    if re.match(r"[\w']|[-=_^]\w", after):  # "vitamin C" never gets here; "C-H", "x_A", "A=..." do
        return None
    bracketed = bool(opened and closed) or match.string[max(0, match.start("letter") - 2):match.start(
        "letter")].endswith(("**", "{", "$"))
    if not bracketed:
        if letter.islower() and (letter == "a" or not re.match(r"\s*(?:[.,;:!)\n]|$)", after)):
            return None  # "the answer is a tricky one"
        word = re.match(r"\s+([a-z]+)", after)
        if letter == "A" and word and word.group(1) not in _CONNECTIVE:
            return None  # "The answer is A tricky ..."
    if _MORE_LETTERS.match(after):
        return ""  # "B and C", "(B), (C)": several letters are no answer
    return letter.upper()


def _span(match: re.Match) -> tuple[int, int]:
    """Where the letter (with its bracket) or the ordinal of a statement match stands in the text."""
    if "ordinal" in match.re.groupindex:
        return match.span("ordinal")
    return match.start("letter"), match.end("close") if match.group("close") else match.end("letter")


def last_statement(text: str) -> tuple[str, int] | None:
    """Return (letter, end) for the last statement in ``text``: the letter ("" when the statement names
    several letters) and where the statement's letter ends; None when ``text`` states no letter."""
    last, found = None, None
    for pattern in _STATEMENTS:
        for m in pattern.finditer(text):
            if (last is None or _span(m) > _span(last)) and (letter := _stated(m)) is not None:
                last, found = m, letter  # the last letter stated wins, whichever pattern states it
    return None if last is None else (found, _span(last)[1])


def retracted(text: str, end: int, letter: str) -> bool:
    """True when the text after a statement (ending at ``end``) takes its ``letter`` back: right after it
    ("Wait, that's wrong.", "Wait, no.", "scratch that") or anywhere later ("Actually B is wrong", "option B
    is incorrect", "B can't be right"); a question ("B is wrong?") or a condition ("if B is wrong") takes
    nothing back."""
    rest = text[end:]
    if _TAKEN_BACK.match(rest):
        return True
    named = re.compile(rf"(?<![\w'])(?:option\s+|choice\s+)?\(?{letter}\)?\s+(?:(?:is|was|seems|must\s+be)"
                       rf"(?:\s+(?:actually|also|clearly|definitely|in\s+fact))?\s+{_WRONG}|"
                       r"can(?:not|'t)\s+be\s+(?:right|correct|the\s+answer))", _I)
    return any(not _hypothetical(rest, m.start()) for m in named.finditer(rest))
