"""Benchmark registry: each benchmark = column mapping + prompt format + gold parser + grader.

An ``eval.benchmarks`` entry is one of
- ``NAME`` (a registered benchmark on its bundled offline sample, where one ships),
- ``NAME:PATH`` (a registered benchmark on the user's file: the full GSM8K test set, GPQA-Diamond, ...),
- ``bundled:SET`` or a plain ``.jsonl``/``.parquet`` path (a generic question/answer set).
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pyarrow.parquet as pq

from upft_ray.config.columns import Columns
from upft_ray.grading import grade, grade_letter, last_boxed  # grade_letter: importable from here too
from upft_ray.io.questions import load_questions
from upft_ray.io.sources import list_source_files, source_name

LETTERS = "ABCD"


def gsm8k_gold(answer: str) -> str:
    """Return the GSM8K gold number: the text after ``####``, without thousands separators."""
    return answer.split("####")[-1].strip().replace(",", "")


def math_gold(answer: str) -> str:
    """Return a MATH gold answer: the ``answer`` field, or the last ``\\boxed{}`` of a solution."""
    return last_boxed(answer) or answer.strip()


def aime_gold(answer: str) -> str:
    """Return an AIME gold answer as a plain integer string (``"033"`` -> ``"33"``)."""
    text = answer.strip()
    return str(int(text)) if text.lstrip("-").isdigit() else text


def gpqa_choices(row: dict, seed: int) -> tuple[list[str], str]:
    """Return (options in shuffled order, gold letter) for a GPQA row; the order is seeded per id."""
    options = [row["answer"], *row["extra"]]
    digest = hashlib.sha256(f"{seed}:{row['id']}".encode()).digest()
    order = list(range(4))
    random.Random(digest).shuffle(order)
    shuffled = [options[i] for i in order]
    return shuffled, LETTERS[order.index(0)]


def gpqa_question(row: dict, seed: int) -> tuple[str, str]:
    """Return (question with lettered options and an answer instruction, gold letter)."""
    options, gold = gpqa_choices(row, seed)
    lines = [row["question"].strip(), ""] + [f"({LETTERS[i]}) {opt.strip()}" for i, opt in enumerate(options)]
    lines += ["", "Answer with the letter of the correct option, as \\boxed{X}."]
    return "\n".join(lines), gold


@dataclass(frozen=True)
class Benchmark:
    """How to read, prompt and grade one benchmark."""
    name: str
    question_field: str = "question"
    answer_field: str = "answer"
    id_field: str = "id"
    extra_fields: tuple[str, ...] = ()
    default_source: str | None = None  # bundled offline sample, if one ships
    gold: Callable[[str], str] = lambda a: a.strip()
    grader: Callable[[str, str], tuple] = grade
    choices: bool = False  # multiple choice: options shuffled into the question, letter gold
    notes: str = field(default="", compare=False)


BENCHMARKS: dict[str, Benchmark] = {
    "gsm8k": Benchmark("gsm8k", id_field="idx", gold=gsm8k_gold, default_source="bundled:gsm8k-test-20",
                       notes="GSM8K test (1,319); gold after ####"),
    "math500": Benchmark("math500", question_field="problem", id_field="unique_id", gold=math_gold,
                         default_source="bundled:math500-test-20", notes="MATH-500; gold in answer/\\boxed{}"),
    "aime2024": Benchmark("aime2024", question_field="problem", gold=aime_gold,
                          notes="AIME 2024 (30); integer answers; bring the file"),
    "gpqa": Benchmark("gpqa", question_field="Question", answer_field="Correct Answer", id_field="Record ID",
                      extra_fields=("Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3"),
                      grader=grade_letter, choices=True,
                      notes="GPQA-Diamond (198) as four-option multiple choice (25% by chance), options shuffled "
                            "with the run seed; the standard benchmark, NOT the paper's setting (gpqa_free); "
                            "bring the file"),
    # The paper's GPQA (official UPFT code, data/math_test/gpqa): the question alone, no options, graded
    # against the correct answer's text; hence its 8-18% scores, below multiple choice's 25% floor.
    "gpqa_free": Benchmark("gpqa_free", question_field="Question", answer_field="Correct Answer",
                           id_field="Record ID", grader=grade,
                           notes="GPQA-Diamond (198) free-form as in the paper: question without options, gold "
                                 "= the correct answer's text; same file as gpqa"),
}
GENERIC = Benchmark("generic")


def parse_benchmark_spec(spec: str) -> tuple[str, Benchmark, str]:
    """Return (result name, benchmark, question source) for an ``eval.benchmarks`` entry.

    Raises ValueError for a registered benchmark that has no bundled sample and no file given, and
    for a bare name that is neither registered nor an existing path (a typo such as ``gsm8K``)."""
    name, _, path = spec.partition(":")
    if name in BENCHMARKS:
        bench = BENCHMARKS[name]
        source = path or bench.default_source
        if not source:
            raise ValueError(f"eval.benchmarks: {name!r} ships no offline data; name a file as {name}:PATH")
        return name, bench, source
    if not any(ch in spec for ch in ":/.*") and not Path(spec).exists():
        raise ValueError(f"eval.benchmarks: {spec!r} is not a registered benchmark ({', '.join(BENCHMARKS)}) "
                         "nor an existing path; give NAME, NAME:PATH, bundled:SET or a .jsonl/.parquet path")
    return source_name(spec), GENERIC, spec


def gold_problem(record: object, field: str) -> str | None:
    """Return why ``record`` has no usable gold answer in ``field`` (None when it has one).

    Usable: a non-blank string or a finite number. Missing, null, blank, a bool, a NaN/inf or a
    container (dict, list) is not: grading against it would score the row wrong in silence."""
    if not isinstance(record, dict):
        return None  # not a record at all: validate_record names the problem
    if field not in record:
        return f"missing gold answer field {field!r}"
    value = record[field]
    if value is None:
        return f"gold answer field {field!r} is null"
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return f"gold answer field {field!r} is {type(value).__name__}, not a string or number"
    if isinstance(value, float) and not math.isfinite(value):
        return f"gold answer field {field!r} is {value!r}, not a finite number"
    if isinstance(value, str) and not value.strip():
        return f"gold answer field {field!r} is empty"
    return None


def _fields_found(source: str, seen: set[str]) -> list[str]:
    """Return the columns a source has (table files: their schema; JSONL: the keys of the records read)."""
    fields = set(seen)
    for file in list_source_files(source):
        if file.format == "parquet":
            try:
                fields |= set(pq.read_schema(file.uri).names)
            except Exception:  # only for the error message: the keys seen are still named
                pass
    return sorted(fields)


def load_benchmark(spec: str, seed: int, max_questions: int = 0, columns: Columns | None = None):
    """Return (name, benchmark, QuestionSet) with questions in prompt form and gold answers parsed.

    ``columns`` maps the fields of a generic set (``bundled:SET``, a plain path; registered
    benchmarks keep their own mapping). A row without a usable gold answer (see ``gold_problem``),
    or whose gold parses to nothing, is rejected with its reason, as are rows ``validate_record``
    refuses and repeated ids: rows read = rows kept + rows rejected. Raises ValueError naming the
    source, the expected field and the fields found when no row has a usable gold answer."""
    name, bench, source = parse_benchmark_spec(spec)
    if bench is GENERIC and columns is not None:
        cols = Columns(columns.question, columns.answer, columns.id, columns.extra)
    else:
        cols = Columns(bench.question_field, bench.answer_field, bench.id_field, bench.extra_fields)
    keys: set[str] = set()
    with_gold = 0

    def gold_check(record, reason, row):  # the gold answer first: a row without one is never graded
        nonlocal with_gold
        keys.update(record if isinstance(record, dict) else ())
        missing_gold = gold_problem(record, cols.answer)
        with_gold += isinstance(record, dict) and missing_gold is None
        if (reason := missing_gold or reason) is not None:
            return reason
        try:
            if bench.choices:
                row["question"], row["answer"] = gpqa_question(row, seed)
            else:
                row["answer"] = bench.gold(row["answer"])
        except Exception as err:  # noqa: BLE001 -- one row's gold costs that row only
            return f"gold_parse_error: {type(err).__name__}: {' '.join(str(err).split())[:300]}"
        return None if row["answer"].strip() else f"gold answer field {cols.answer!r} parses to an empty {name} answer"

    qs = load_questions(source, cols, max_questions, check=gold_check)
    if keys and not with_gold:
        raise ValueError(f"{source}: no row has a usable gold answer in field {cols.answer!r} (fields found: "
                         f"{_fields_found(source, keys)}); for a generic set map it with eval.answer_field or "
                         f"eval.columns")
    return name, bench, qs


def benchmark_exists(spec: str) -> None:
    """Check that the files behind a benchmark entry exist; raises FileNotFoundError/ValueError naming them."""
    list_source_files(parse_benchmark_spec(spec)[2])
