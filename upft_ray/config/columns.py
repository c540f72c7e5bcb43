"""Which record fields hold a question, its gold answer and its id: the column presets and their overrides."""

from __future__ import annotations

from dataclasses import dataclass

# name -> (question field, answer field, id field); "" for the id field means "derive it".
COLUMN_PRESETS: dict[str, tuple[str, str, str]] = {
    "generic": ("question", "answer", "id"),           # the bundled sets, most JSONL files
    "omi2": ("problem", "expected_answer", ""),         # nvidia/OpenMathInstruct-2 (no id column)
    "uhard": ("problem", "answer", "id"),               # U-Hard-style math rows (problem/answer)
}


@dataclass(frozen=True)
class Columns:
    """Which record fields hold the question, the gold answer and the id ("" = derive the id)."""
    question: str = "question"
    answer: str = "answer"
    id: str = "id"
    extra: tuple[str, ...] = ()  # further required text fields (a multiple-choice set's options)

    def names(self) -> list[str]:
        """Return the field names to read, in order, without empties or repeats."""
        return list(dict.fromkeys(n for n in (self.question, self.answer, self.id, *self.extra) if n))


def preset_columns(preset: str, question: str = "", answer: str = "", id: str = "") -> Columns:
    """Return the Columns of ``preset`` with any non-empty field name given here taking its place."""
    q, a, i = COLUMN_PRESETS[preset]
    return Columns(question or q, answer or a, id or i)
