"""The paper's datasets as their public releases lay them out, and the question files we make of them.

Each ``PublicSet`` says which columns a release has (``source`` names), which columns the file we
write has (the training sets: the ``generic`` preset, ``question``/``answer``/``id``, so that
``sample.questions: DIR/prm12k.jsonl`` works with default columns; the benchmarks: the columns the
registered benchmark of ``upft_ray.evaluation.benchmarks`` reads, so that ``gsm8k:DIR/gsm8k.jsonl``
works), where the release lives, and the size the paper reports. ``upft_ray.io.prepare`` does the
reading and writing; a test checks every benchmark layout here against the registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

TRAINING, BENCHMARK = "training", "benchmark"


def gsm8k_answer_problem(answer: str) -> str | None:
    """Return why a GSM8K ``answer`` has no final ``#### N`` line (None when it has one)."""
    if "####" not in answer:
        return "field 'answer' has no '#### N' final answer"
    if not answer.split("####")[-1].strip():
        return "field 'answer' has an empty '####' final answer"
    return None


@dataclass(frozen=True)
class PublicSet:
    """One public release: its columns, the columns we write, where it lives, and the paper's size.

    ``id_source`` names the release's id column ("" = none); ``id_fallback`` is what an id is when
    the column is absent: ``hash`` (``q-`` + the question's hash, as the sampler derives it) or
    ``index`` (the record's 0-based position in the release) or ``""`` (the column is required)."""
    name: str
    kind: str                               # TRAINING or BENCHMARK
    title: str                              # the release, as the paper names it
    url: str                                # where to get it
    files: tuple[str, ...]                  # the release's own file(s) inside a download directory (globs)
    split: str                              # the split to read from an HF DatasetDict directory
    question: tuple[str, str]               # (release column, our column)
    answers: tuple[str, ...]                # release columns that may hold the gold; the first is the default
    answer_out: str
    id_source: str
    id_out: str
    id_fallback: str
    required_extra: tuple[str, ...] = ()    # further text columns every row must have, copied as they are
    keep: tuple[str, ...] = ()              # columns copied when present (metadata; never required)
    expected_rows: int = 0                  # the paper's size
    approximate: bool = False               # the paper's size is rounded ("~600K"): within 5% matches
    row_problem: Callable[[str], str | None] | None = None  # a set's own check of the gold answer
    consumer: str = ""                      # how the file we write is used
    assumptions: tuple[str, ...] = ()
    notes: str = ""


def _training(name, title, url, files, question, answer, id_source, expected, **kw) -> PublicSet:
    fallback = kw.pop("id_fallback", "hash")
    return PublicSet(name, TRAINING, title, url, files, "train", (question, "question"), (answer,), "answer",
                     id_source, "id", fallback, expected_rows=expected,
                     consumer=f"sample.questions: DIR/{name}.jsonl (columns: generic)", **kw)


PUBLIC_SETS: dict[str, PublicSet] = {s.name: s for s in [
    _training("prm12k", "PRM-12K (openai/prm800k MATH train split)", "https://github.com/openai/prm800k",
              ("prm800k/math_splits/train.jsonl", "math_splits/train.jsonl", "train.jsonl"),
              "problem", "answer", "unique_id", 12_000, id_fallback="", keep=("subject", "level")),
    _training("omi2", "OpenMathInstruct-2 (nvidia/OpenMathInstruct-2, train split)",
              "https://huggingface.co/datasets/nvidia/OpenMathInstruct-2",
              ("data/train-*.parquet", "train-*.parquet"), "problem", "expected_answer", "", 600_000,
              approximate=True, keep=("problem_source",),
              notes="~14M solutions over ~600K problems: one row per distinct problem text (the first "
                    "solution's expected_answer kept), repeats counted as duplicates; the id is the "
                    "question's hash. Only the problem, expected_answer and problem_source columns are read."),
    _training("limo", "LIMO (GAIR/LIMO limo.jsonl)", "https://huggingface.co/datasets/GAIR/LIMO",
              ("limo.jsonl",), "question", "answer", "", 817),
    _training("uhard", "U-Hard", "(not public)", (), "problem", "answer", "id", 100_000, approximate=True,
              assumptions=("U-Hard's layout is not public: rows are ASSUMED to hold problem and answer columns "
                           "and optionally id (the 'uhard' column preset); a row without an id gets the "
                           "question's hash",
                           "the paper's '100K' is taken as approximate (within 5% matches)")),
    PublicSet("gsm8k", BENCHMARK, "GSM8K test (openai/gsm8k, main config)", "https://huggingface.co/datasets/openai/gsm8k",
              ("main/test-*.parquet", "test-*.parquet"), "test", ("question", "question"), ("answer",), "answer",
              "idx", "idx", "index", expected_rows=1_319, row_problem=gsm8k_answer_problem,
              consumer="eval.benchmarks: gsm8k:DIR/gsm8k.jsonl",
              notes="answer kept whole (worked solution + '#### N'): gsm8k_gold reads the text after ####; "
                    "idx = the row's 0-based position in the release when the release has no idx column"),
    PublicSet("math500", BENCHMARK, "MATH-500 (HuggingFaceH4/MATH-500)",
              "https://huggingface.co/datasets/HuggingFaceH4/MATH-500", ("test.jsonl",), "test",
              ("problem", "problem"), ("answer", "solution"), "answer", "unique_id", "unique_id", "",
              keep=("solution", "subject", "level"), expected_rows=500,
              consumer="eval.benchmarks: math500:DIR/math500.jsonl",
              notes="gold: the 'answer' column by default (math_gold reads it; a \\boxed{} inside is unboxed); "
                    "--gold solution writes the worked solution as the answer, so math_gold takes its last "
                    "\\boxed{}, the official UPFT eval's convention (the two differ as strings in ~86 of 500 rows)"),
    PublicSet("aime24", BENCHMARK, "AIME 2024 (HuggingFaceH4/aime_2024)",
              "https://huggingface.co/datasets/HuggingFaceH4/aime_2024", ("data/train-*.parquet", "train-*.parquet"),
              "train", ("problem", "problem"), ("answer",), "answer", "id", "id", "",
              keep=("url", "year"), expected_rows=30, consumer="eval.benchmarks: aime2024:DIR/aime24.jsonl",
              notes="gold: the answer string as released (the official eval's convention); aime_gold reads "
                    "'025' as 25"),
    PublicSet("gpqa-diamond", BENCHMARK, "GPQA-Diamond (Idavidrein/gpqa gpqa_diamond.csv)",
              "https://huggingface.co/datasets/Idavidrein/gpqa", ("gpqa_diamond.csv", "dataset/gpqa_diamond.csv"),
              "train", ("Question", "Question"), ("Correct Answer",), "Correct Answer", "Record ID", "Record ID", "",
              required_extra=("Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3"),
              keep=("High-level domain", "Subdomain"), expected_rows=198,
              consumer="eval.benchmarks: gpqa_free:DIR/gpqa-diamond.jsonl (the paper's free-form setting) or "
                       "gpqa:DIR/gpqa-diamond.jsonl (four-option multiple choice)",
              notes="cells kept as released (GPQA's cells carry stray spaces and newlines; the benchmark strips them)"),
]}


def public_set(name: str) -> PublicSet:
    """Return the layout of public set ``name``; raises KeyError naming the known sets."""
    if name not in PUBLIC_SETS:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(PUBLIC_SETS)}")
    return PUBLIC_SETS[name]
