"""Generated blocks inside hand-written Markdown (README.md, bench/RESULTS.md): the text between two
markers is written by a script from a recorded results file, never typed; tests compare the two."""

from __future__ import annotations

from pathlib import Path


def markers(name: str, writer: str) -> tuple[str, str]:
    """Return the (begin, end) marker lines of block ``name``, written by the script ``writer``."""
    return f"<!-- {name}: begin (written by {writer}; do not edit) -->", f"<!-- {name}: end -->"


def find_block(text: str, begin: str, end: str, where: str) -> str:
    """Return the block of ``text`` from ``begin`` to ``end`` (markers included); ValueError naming
    ``where`` when its markers are missing, doubled or out of order."""
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        raise ValueError(f"{where}: needs exactly one '{begin}' followed by one '{end}'")
    return text[text.index(begin):text.index(end) + len(end)]


def replace_block(path: Path, begin: str, end: str, block: str) -> bool:
    """Replace the block between ``begin`` and ``end`` in the file ``path`` with ``block`` (markers
    included); return whether the file changed."""
    text = path.read_text()
    new = text.replace(find_block(text, begin, end, str(path)), block)
    if new != text:
        path.write_text(new)
    return new != text


def write_or_check(path: Path, text: str, check: bool) -> bool:
    """With ``check``: return whether the file ``path`` holds ``text`` (a generated file is not stale); else
    write ``text`` there and return True."""
    if check:
        return path.is_file() and path.read_text() == text
    path.write_text(text)
    return True
