"""Finding the final answer in a model's output: the last complete ``\\boxed{}``; else the last
"answer is" clause, read as an expression up to the sentence end; else the last number (fractions,
signs, scientific notation kept). Every scan is linear in the output's length (1 MB outputs, thousands
of boxes)."""

from __future__ import annotations

import re

from upft_ray.grading.normalize import MATH_WORDS, SCALES, strip_lhs

_MAX_CLAUSES = 100  # "answer is" phrases read back from the end (a 1 MB output may repeat it)
_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")
_SAID = re.compile(
    r"answers?(?:\s+to\s+(?:the|this|our)\s+[a-z ]{1,40}?)?[*_]*\s*"
    r"(?:(?:is|are|was|would\s+be|should\s+be|will\s+be|must\s+be)(?![\w'])|=|:)[*_]*"
    r"(?:\s*[:=])?(?:\s+(?:therefore|thus|then|hence|simply|just|clearly|indeed|exactly|actually|now))?",
    re.IGNORECASE)
_NUMBER = re.compile(
    r"(?<![\w.\\^_])(?<![\w)\]}][-−])[-−]?"
    r"(?:\\[dt]?frac\{-?\d+\}\{\d+\}|\\[dt]?frac\d\d"
    r"|(?:\d+ (?=\d+/\d))?(?:\d{1,3}(?:,\d{3})+(?!\d|,\d)|\d+)(?:\.\d+)?"
    r"(?:(?:\s*/\s*\d+(?:\.\d+)?(?![\d/]))"
    r"|(?:[eE][-+]?\d+(?![\w.]))"
    r"|(?:\s*(?:\\times|\\cdot|×|\*)\s*10\^\{?[-−]?\d+\}?)|\s(?:thousand|million|billion|trillion)\b)?"
    r"(?:\s*\\?%)?)", re.IGNORECASE)


def _group_end(text: str, i: int) -> int:
    """Index just past the brace group whose ``{`` is at ``i - 1``, or -1 when it never closes."""
    depth = 1
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return -1


def boxed(text: str) -> tuple[bool, str | None]:
    """Return (a box was written, its content): content of the last ``\\boxed{}``/``\\fbox{}``, brace
    matched; None when that box is unclosed or empty (the output then has no answer)."""
    start = -1
    for m in _BOX.finditer(text):
        start = m.end()
    if start < 0:
        return False, None
    end = _group_end(text, start)
    content = text[start:end - 1].strip() if end > 0 else ""
    return True, content or None


def last_boxed(text: str) -> str | None:
    """Return the content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) with nested braces, or None
    when there is none or it is unclosed or empty."""
    return boxed(text or "")[1]


def _strip_wrappers(clause: str) -> str:
    """Drop the markdown and math openers a model puts before its answer (``**``, ``$``, ``\\(``)."""
    return re.sub(r"^(?:\s|\*\*|__|:)+", "", clause)


_MATH_SYMBOLS = " +-*/^=<>|'_!%$\u2212\u00d7\u00b7\u00b1\u221a\u03c0\u00b0\u221e"


def _after_command(text: str, i: int) -> int:
    """Return where the TeX command at ``text[i]`` ends (a text command's braced group included), or -1 when
    its group is unclosed."""
    m = re.match(r"\\([a-zA-Z]+)\s*", text[i:])
    if m and m.group(1) in ("text", "textbf", "mathrm", "mbox", "textrm", "mathbf") \
            and text[i + m.end():i + m.end() + 1] == "{":
        return _group_end(text, i + m.end() + 1)
    return i + (m.end() if m else 2)


def _after_word(text: str, i: int, depth: int) -> int:
    """Return where the word at ``text[i]`` ends when it belongs to the expression (a variable, a math word,
    "and"/"or" between answers), or -1 when it ends the expression (an English word)."""
    word = re.match(r"[a-zA-Z]+", text[i:])
    w = word.group(0) if word else text[i]
    after = text[i + len(w):]
    if w in ("and", "or") and re.match(r"\s+(?:[-\d\\($(]|[a-zA-Z]\s*=)", after) and depth == 0:
        return i + len(w)
    if len(w) >= 2 and w.lower() not in MATH_WORDS and depth == 0 \
            and not (w.lower() in SCALES and re.search(r"\d\s*$", text[:i])):
        return -1
    if len(w) == 1 and text[i - 1:i] in ("", " ") and re.match(r"\s+[a-zA-Z]{2,}", after) and depth == 0:
        return -1  # "a tricky one", "I think": an English word, not a variable
    return i + len(w)


def _math_span(text: str) -> str:
    """The leading expression of ``text``: math tokens up to a word, a sentence end or a clause break.

    ``5 + 7 = 12. So`` -> ``5 + 7 = 12``; ``13 apples, not 14`` -> ``13``; ``3x`` stays ``3x``."""
    i, depth, n = 0, 0, len(text)
    while i < n:
        c = text[i]
        if c == "\\" or (c.isalpha() and c not in _MATH_SYMBOLS):
            end = _after_command(text, i) if c == "\\" else _after_word(text, i, depth)
            if end < 0:
                break
            i = end
            continue
        if c == "!" and re.match(r"!(?:\s|$)", text[i:]) and depth == 0:
            break  # "The answer is 12!": an exclamation, not a factorial
        if c.isdigit() or c in _MATH_SYMBOLS:
            i += 1
            continue
        if c in ".:" and i + 1 < n and text[i + 1].isdigit() and (c == "." or text[i - 1:i].isdigit()):
            i += 1
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            if depth == 0:
                break
            depth -= 1
        elif c == ",":
            if depth == 0 and re.match(r",\s*(?:[a-zA-Z]{2,}|$)", text[i:]) \
                    and not re.match(r",\s*(?:and|or)\s+[-\d\\($]", text[i:]):
                break
        elif depth == 0 or c in "\n?;:":
            break
        i += 1
    span = re.sub(r"\s*\([^()]*(?<![\\a-zA-Z])[a-zA-Z]{3,}[^()]*\)\s*$", "", text[:i])  # "12 (twelve)"
    span = re.sub(r"(?:\s+(?:and|or))+\s*$", "", span)
    span = re.sub(r"\s*,?\s+(?:and|or)\s+", ", ", span)  # "x = 3 or x = -3": a list of answers
    return span.strip().rstrip(",.;:= ").strip()


_DELIMITED = re.compile(r"\$\$(.+?)\$\$|\$(?!\d[\d,.]*[.,;!?]?(?:\s|$))([^$]+?)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]",
                        re.DOTALL)
_JOINER = re.compile(r"\s*(?:,\s*(?:and|or)?|and|or)\s*(?=\$|\\\(|\\\[)")


def _delimited(clause: str) -> str | None:
    """The math of a clause that opens with ``$``, ``$$``, ``\\(`` or ``\\[`` (the text before its
    closer); formulas joined by "and"/"or"/commas (``$x=3$ or $x=-3$``) are read as one list."""
    pieces, pos = [], 0
    while m := _DELIMITED.match(clause, pos):
        math = next(g for g in m.groups() if g is not None)
        if re.search(r"\s[a-zA-Z]{3,}\s", math):
            break
        pieces.append(math.strip())
        joiner = _JOINER.match(clause, m.end())
        if not joiner:
            break
        pos = joiner.end()
    return ", ".join(pieces) if pieces else None


def _sentence(clause: str) -> str:
    """The words of a clause up to its sentence end (a decimal point is not one), for textual answers."""
    m = re.match(r"(.{1,200}?)(?:[.!?](?!\d)|\n|$)", clause, re.DOTALL)
    return m.group(1).strip() if m else ""


def said_answers(text: str) -> tuple[str | None, str | None]:
    """Return (expression, sentence) stated after the "answer is" / "answer:" phrases: the last clause
    that holds math (right-hand side of a trailing ``=``), and the last clause's words to its sentence end."""
    math_found = words_found = None
    phrases = [m.end() for m in _SAID.finditer(text)][-_MAX_CLAUSES:]
    for end in reversed(phrases):  # the last phrase that states math wins; words: the last phrase
        clause = _strip_wrappers(text[end:end + 2000])
        plain = clause.replace("**", "").replace("__", "")
        words_found = words_found or _sentence(plain) or None
        math = _delimited(clause.replace("\\$", "\0"))
        math = math.replace("\0", "\\$") if math is not None else None
        if math is None:
            math = _math_span(plain.replace("\\$", "$").lstrip("$"))
        math = math.strip().strip("$").strip()
        if math and math_found is None:
            math_found = strip_lhs(math)
        if math and re.search(r"[\d\\]", math):
            return strip_lhs(math), words_found
    return math_found, words_found


def last_number(text: str) -> str | None:
    """The last number of ``text`` (``-3``, ``1/2``, ``1.5e6``, ``1,234``, ``\\frac{3}{4}``); inside
    inline math, the right-hand side of that formula's last ``=`` (``$5 + 7 = 12$`` -> ``12``)."""
    last = None
    for last in _NUMBER.finditer(text):
        pass
    if last is None:
        return None
    inner = _inline_math_around(text, last.start())
    if inner is not None:
        rhs = strip_lhs(inner).strip().rstrip(".,")
        if rhs and len(rhs) <= 60 and re.search(r"\d", rhs):
            return rhs
    return last.group(0).replace("−", "-")


def _inline_math_around(text: str, pos: int) -> str | None:
    """The inline formula (``$..$``, ``\\(..\\)``) that ``pos`` lies in, or None."""
    for left, right in (("\\(", "\\)"), ("\\[", "\\]")):
        opener = text.rfind(left, 0, pos)
        if opener >= 0 and text.rfind(right, opener, pos) < 0:
            closer = text.find(right, pos)
            return text[opener + 2:closer] if closer > 0 else None
    dollars = text.count("$", 0, pos) - text.count("\\$", 0, pos)
    if dollars % 2 == 1:
        opener, closer = text.rfind("$", 0, pos), text.find("$", pos)
        return text[opener + 1:closer].strip("$") if closer > 0 else None
    return None


def extract_answer(text: str, words: bool = False) -> str | None:
    """Return the final answer in a model output: boxed, else 'the answer is', else the last number.

    ``words`` (a textual gold, e.g. a chemical name): an "answer is" clause made of words counts too,
    before the last number. None when there is no answer, and when the last box is unclosed or empty
    (no fallback then)."""
    if not text:
        return None
    has_box, content = boxed(text)
    if has_box:
        return content
    math, said_words = said_answers(text)
    if words and said_words:
        return said_words
    return math or last_number(text)
