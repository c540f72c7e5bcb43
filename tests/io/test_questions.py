"""Question files: malformed rows are rejected with reasons, counts balance, bad files are named."""

import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from upft_ray.config.columns import Columns
from upft_ray.io.bundled_data import BUNDLED_SETS, bundled_path, generate, render_jsonl
from upft_ray.io.multistep_data import MULTISTEP_STEPS
from upft_ray.io.questions import load_questions, question_id


def test_bundled_files_match_their_generator():
    for name in BUNDLED_SETS:
        assert bundled_path(name).read_text() == render_jsonl(generate(name))


def test_bundled_eval_set_is_held_out():
    train = {r["question"] for r in generate("arith-train")}
    assert not train & {r["question"] for r in generate("arith-eval")}


def test_multistep_heldout_set_is_disjoint_from_its_training_set_and_exact():
    train, heldout = generate("multistep-train"), generate("multistep-heldout")
    assert (len(train), len(heldout)) == (400, 600)
    assert not {r["question"] for r in train} & {r["question"] for r in heldout}
    assert len({r["question"] for r in heldout}) == 600 and len({r["id"] for r in heldout}) == 600
    for row in train + heldout:  # each answer is what the text says, recomputed independently
        assert _solve_multistep(row["question"]) == int(row["answer"]), row


def _solve_multistep(question: str) -> int:
    sentences = re.split(r"(?<=[.?]) ", question)
    assert len(sentences) == MULTISTEP_STEPS + 2, question
    value = int(re.search(r" has (\d+) ", sentences[0]).group(1))
    for sentence in sentences[1:-1]:
        nums = [int(n) for n in re.findall(r"\d+", sentence)]
        if "packs" in sentence:
            value += nums[0] * nums[1]
        elif "finds" in sentence or sentence.startswith("A friend gives"):
            value += nums[0]
        elif "gives away" in sentence or "loses" in sentence:
            value -= nums[0]
        elif sentence.endswith(("doubles.", "triples.")):
            value *= 2 if sentence.endswith("doubles.") else 3
        else:
            assert "equal groups" in sentence and value % nums[0] == 0, sentence
            value //= nums[0]
        assert value > 0, question  # every count stays a positive integer
    return value


def test_malformed_rows_are_rejected_with_reasons(tmp_path):
    lines = [
        json.dumps({"id": "ok1", "question": "What is 2+2?", "answer": "4"}),
        json.dumps({"id": "ok2", "question": "What is 3+3?", "answer": 6}),      # numeric answer is fine
        json.dumps({"question": "No id here?", "answer": "1"}),                  # id derived from text
        "{not json",
        json.dumps({"id": "e1", "answer": "1"}),                                 # missing question
        json.dumps({"id": "e2", "question": "   ", "answer": "1"}),              # empty question
        json.dumps({"id": "e3", "question": 42, "answer": "1"}),                 # question not a string
        json.dumps({"id": "e4", "question": "Q?", "answer": ["x"]}),             # answer not a string
        json.dumps({"id": ["x"], "question": "Q2?", "answer": "1"}),             # id not a string
        json.dumps(["a", "list"]),                                               # row not an object
        json.dumps({"id": "ok1", "question": "Duplicate id?", "answer": "1"}),   # duplicate id
        json.dumps({"id": "e5", "question": None, "answer": "1"}),               # null question
    ]
    path = tmp_path / "q.jsonl"
    path.write_text("\n".join(lines) + "\n")
    qs = load_questions(str(path))
    assert qs.num_read == len(lines) == len(qs.rows) + len(qs.rejected)
    assert [r["id"] for r in qs.rows] == ["ok1", "ok2", question_id("No id here?")]
    assert qs.rows[1]["answer"] == "6"
    reasons = {r["line"]: r["reason"] for r in qs.rejected}
    assert "invalid JSON" in reasons[4]
    assert reasons[5] == "missing field 'question'"
    assert reasons[6] == "field 'question' is empty"
    assert "not a string" in reasons[7] and "not a string" in reasons[8] and "not a string" in reasons[9]
    assert "not an object" in reasons[10]
    assert "duplicate id" in reasons[11]
    assert reasons[12] == "missing field 'question'"


def test_missing_column_names_file_and_column(tmp_path):
    path = tmp_path / "q.parquet"
    pq.write_table(pa.table({"problem": ["1+1?"], "solution": ["2"]}), path)
    with pytest.raises(ValueError, match=r"q\.parquet: no column 'question'"):
        load_questions(str(path))
    qs = load_questions(str(path), Columns(question="problem", answer="solution"))
    assert qs.rows[0]["question"] == "1+1?" and qs.rows[0]["answer"] == "2"


def test_missing_and_unreadable_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_questions(str(tmp_path / "nope.jsonl"))
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet at all")
    with pytest.raises(ValueError, match="broken.parquet"):
        load_questions(str(broken))
