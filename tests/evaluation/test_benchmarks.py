"""The benchmark registry: gold parsers, multiple-choice shuffling and letter grading, specs."""

import dataclasses
import json

import pandas as pd
import pytest

from upft_ray.evaluation.benchmarks import (
    BENCHMARKS,
    aime_gold,
    gpqa_choices,
    grade_letter,
    gsm8k_gold,
    load_benchmark,
    math_gold,
    parse_benchmark_spec,
)
from upft_ray.evaluation.metrics import benchmark_metrics


def test_gold_parsers():
    assert gsm8k_gold("She makes 9 * 2 = $<<9*2=18>>18.\n#### 1,018") == "1018"
    assert math_gold("so \\boxed{\\frac{1}{2}} is it") == "\\frac{1}{2}" and math_gold("42") == "42"
    assert aime_gold("033") == "33" and aime_gold(" 7 ") == "7"


def test_bundled_samples_load_with_parsed_gold():
    name, _, qs = load_benchmark("gsm8k", seed=42)
    assert name == "gsm8k" and len(qs.rows) == 20 and qs.rows[0]["answer"] == "18"
    name, _, qs = load_benchmark("math500", seed=42, max_questions=3)
    assert [r["answer"] for r in qs.rows][2] == "\\frac{14}{3}"


def test_specs_name_what_is_missing(tmp_path):
    with pytest.raises(ValueError, match="gpqa:PATH"):
        parse_benchmark_spec("gpqa")
    assert parse_benchmark_spec("bundled:arith-eval")[0] == "arith-eval"
    assert parse_benchmark_spec(f"aime2024:{tmp_path}/a.jsonl")[2] == f"{tmp_path}/a.jsonl"


def _gpqa_file(tmp_path, n=12):
    path = tmp_path / "gpqa.jsonl"
    rows = [{"Record ID": f"r{i}", "Question": f"Which is {i}?", "Correct Answer": f"right {i}",
             "Incorrect Answer 1": "w1", "Incorrect Answer 2": "w2", "Incorrect Answer 3": "w3"} for i in range(n)]
    rows.append({"Record ID": "bad", "Question": "Q?", "Correct Answer": "x", "Incorrect Answer 1": "w1"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_gpqa_options_are_shuffled_with_a_fixed_seed(tmp_path):
    path = _gpqa_file(tmp_path)
    _, _, qs = load_benchmark(f"gpqa:{path}", seed=42)
    assert len(qs.rows) == 12 and "Incorrect Answer 2" in qs.rejected[0]["reason"]
    _, _, again = load_benchmark(f"gpqa:{path}", seed=42)
    assert [r["answer"] for r in qs.rows] == [r["answer"] for r in again.rows]
    assert len({r["answer"] for r in qs.rows}) > 1  # the correct option is not always in one place
    for row in qs.rows:
        correct_line = next(line for line in row["question"].splitlines() if "right" in line)
        assert correct_line.startswith(f"({row['answer']})")
    options, gold = gpqa_choices({"id": "x", "answer": "yes", "extra": ["a", "b", "c"]}, seed=1)
    assert options["ABCD".index(gold)] == "yes"


@pytest.mark.parametrize("output,gold,expected", [
    ("The answer is \\boxed{C}.", "C", True), ("\\boxed{(B)}", "B", True), ("The answer is (A)", "A", True),
    ("I think (D) is right", "D", True), ("\\boxed{B}", "C", False), ("no idea", "A", False),
    ("The answer is a tricky one.", "A", False), ("The answer is (B). A quick check rules out D.", "D", False),
    ("The answer is B and C.", "C", False), ("\\boxed{B, C}", "C", False),
])
def test_grade_letter(output, gold, expected):
    """The registry's letter grader (the full letter table lives in tests/grading/grading_cases.py)."""
    assert BENCHMARKS["gpqa"].grader is grade_letter
    assert grade_letter(output, gold).correct is expected


def test_pass_and_majority_at_k():
    rows = []
    for qid, answers, gold in [("q1", ["1", "2", "2"], "2"), ("q2", ["5", "5", "3"], "3"), ("q3", ["", "", ""], "1")]:
        for k, a in enumerate(answers):
            rows.append({"question_id": qid, "sample_index": k, "extracted_answer": a, "correct": a == gold,
                         "grade_status": "ok" if a else "missing", "num_output_tokens": 10})
    rows[0]["grade_status"], rows[1]["grade_status"] = "timeout", "unparsable"
    m = benchmark_metrics(pd.DataFrame(rows), rows_read=3, rows_rejected=0, k=3)
    assert m["questions"] == 3 and m["graded"] == 9
    assert (m["answers_missing"], m["answers_unparsable"], m["answers_timed_out"]) == (3, 1, 1)
    assert m["pass@3"] == pytest.approx(2 / 3) and m["maj@3"] == pytest.approx(1 / 3)
    assert m["accuracy"] == pytest.approx(3 / 9)


def test_sampled_decoding_requests_k_samples_per_question():
    from upft_ray.config import ConfigError, load_config
    from upft_ray.evaluation.requests import build_eval_requests

    cfg = load_config(None, ["eval.decoding=sample", "eval.num_samples=3", "eval.temperature=0.8",
                             "eval.max_questions=5", "eval.benchmarks=[gsm8k]"])
    requests, rejected, read = build_eval_requests(cfg)
    assert read == {"gsm8k": 5} and not rejected and len(requests) == 15
    assert sorted({r["sample_index"] for r in requests}) == [0, 1, 2]
    assert {r["temperature"] for r in requests} == {0.8}
    greedy, _, _ = build_eval_requests(load_config(None, ["eval.max_questions=5", "eval.benchmarks=[gsm8k]"]))
    assert len(greedy) == 5 and {r["temperature"] for r in greedy} == {0.0}
    with pytest.raises(ConfigError, match="eval.num_samples"):
        load_config(None, ["eval.num_samples=4"])


def test_gpqa_free_is_the_papers_form_without_options(tmp_path):
    from upft_ray.config import load_config
    from upft_ray.evaluation.benchmarks import BENCHMARKS
    from upft_ray.evaluation.requests import build_eval_requests
    from upft_ray.grading import grade

    path = tmp_path / "gpqa.jsonl"
    rows = [{"Record ID": "r1", "Question": "How many protons has carbon?", "Correct Answer": " 6 ",
             "Incorrect Answer 1": "5", "Incorrect Answer 2": "7", "Incorrect Answer 3": "12"},
            {"Record ID": "r2", "Question": "Half of 3?", "Correct Answer": "\\frac{3}{2}",
             "Incorrect Answer 1": "1", "Incorrect Answer 2": "2", "Incorrect Answer 3": "3"},
            {"Record ID": "r3", "Question": "", "Correct Answer": "x"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    name, bench, qs = load_benchmark(f"gpqa_free:{path}", seed=42)
    assert name == "gpqa_free" and bench.grader is grade and not bench.choices
    assert [(r["id"], r["question"], r["answer"]) for r in qs.rows] == [
        ("r1", "How many protons has carbon?", "6"), ("r2", "Half of 3?", "\\frac{3}{2}")]
    assert len(qs.rejected) == 1 and "Question" in qs.rejected[0]["reason"]
    # the same file as multiple choice gets options and a letter gold; the free form gets neither
    _, _, mc = load_benchmark(f"gpqa:{path}", seed=42)
    assert "(A)" in mc.rows[0]["question"] and mc.rows[0]["answer"] in "ABCD"
    cfg = load_config(None, ["eval.max_questions=0", f"eval.benchmarks=[gpqa_free:{path}]"])
    requests, _, read = build_eval_requests(cfg)
    assert read == {"gpqa_free": 3} and len(requests) == 2
    assert all("(A)" not in json.loads(r["messages"])[-1]["content"] for r in requests)
    assert bench.grader("so carbon has \\boxed{6} protons", "6").correct is True
    assert bench.grader("\\boxed{1.5}", "\\frac{3}{2}").correct is True
    assert bench.grader("\\boxed{7}", "6").correct is False
    assert "NOT the paper's" in BENCHMARKS["gpqa"].notes and "paper" in BENCHMARKS["gpqa_free"].notes
    with pytest.raises(ValueError, match="gpqa_free:PATH"):
        parse_benchmark_spec("gpqa_free")


# --- Rows that cannot be graded are rejected, never scored against "" ------------------------------

def _jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_rows_without_a_usable_gold_are_rejected_with_their_reason(tmp_path):
    path = _jsonl(tmp_path / "set.jsonl", [
        {"id": "ok", "question": "1+1?", "answer": "2"},
        {"id": "num", "question": "2+2?", "answer": 4},
        {"id": "missing", "question": "3+3?"},
        {"id": "renamed", "question": "4+4?", "gold": "8"},
        {"id": "null", "question": "5+5?", "answer": None},
        {"id": "empty", "question": "6+6?", "answer": ""},
        {"id": "blank", "question": "7+7?", "answer": "  \n"},
        {"id": "dict", "question": "8+8?", "answer": {"value": 16}},
        {"id": "list", "question": "9+9?", "answer": [18]},
        {"id": "bool", "question": "true?", "answer": True},
        '{"id": "nan", "question": "0/0?", "answer": NaN}',
        {"id": "ok", "question": "again?", "answer": "3"},
        "not json",
    ])
    _, _, qs = load_benchmark(str(path), seed=1)
    assert [(r["id"], r["answer"]) for r in qs.rows] == [("ok", "2"), ("num", "4")]
    reasons = {json.loads(r["raw"]).get("id") if r["raw"].startswith("{") else r["line"]: r["reason"]
               for r in qs.rejected}
    assert qs.num_read == 13 and len(qs.rejected) == 11
    assert reasons["missing"] == "missing gold answer field 'answer'" == reasons["renamed"]
    assert reasons["null"] == "gold answer field 'answer' is null"
    assert reasons["empty"] == "gold answer field 'answer' is empty" == reasons["blank"]
    assert "is dict" in reasons["dict"] and "is list" in reasons["list"] and "is bool" in reasons["bool"]
    assert "not a finite number" in reasons["nan"] and "duplicate id" in reasons["ok"]
    assert "invalid JSON" in reasons[13]


def test_a_gold_that_parses_to_nothing_is_rejected(tmp_path):
    path = _jsonl(tmp_path / "gsm.jsonl", [{"idx": 1, "question": "q?", "answer": "work\n#### 12"},
                                           {"idx": 2, "question": "r?", "answer": "work\n#### "}])
    _, _, qs = load_benchmark(f"gsm8k:{path}", seed=1)
    assert [r["answer"] for r in qs.rows] == ["12"] and "parses to an empty gsm8k answer" in qs.rejected[0]["reason"]


def test_a_set_where_no_row_has_the_gold_field_is_an_error_naming_file_field_and_fields(tmp_path):
    path = _jsonl(tmp_path / "renamed.jsonl", [{"id": str(i), "question": f"{i}?", "solution": str(i)} for i in range(3)])
    with pytest.raises(ValueError) as err:
        load_benchmark(str(path), seed=1)
    assert str(path) in str(err.value) and "'answer'" in str(err.value) and "['id', 'question', 'solution']" in str(err.value)
    parquet = tmp_path / "nulls.parquet"
    pd.DataFrame({"question": ["a?", "b?"], "answer": [None, None], "source": ["x", "y"]}).to_parquet(parquet)
    with pytest.raises(ValueError, match=r"no row has a usable gold answer in field 'answer' \(fields found: "
                                         r"\['answer', 'question', 'source'\]\)"):
        load_benchmark(str(parquet), seed=1)


def test_eval_column_overrides_map_generic_sets_and_bad_sets_fail_before_ray(tmp_path):
    from upft_ray.config import load_config
    from upft_ray.evaluation.requests import build_eval_requests
    from upft_ray.orchestration.preflight import check_ready as check_inputs

    path = _jsonl(tmp_path / "omi.jsonl", [{"problem": "1+2?", "expected_answer": "3"},
                                           {"problem": "2+2?", "expected_answer": None}])
    cfg = load_config(None, [f"eval.benchmarks=[{path}]", "eval.columns=omi2"])
    requests, rejected, read = build_eval_requests(cfg)
    assert read == {"omi": 2} and [r["answer"] for r in requests] == ["3"]
    assert [r["reason"] for r in rejected] == ["gold answer field 'expected_answer' is null"]
    custom = load_config(None, [f"eval.benchmarks=[{path}]", "eval.question_field=problem",
                                "eval.answer_field=expected_answer"])
    assert len(build_eval_requests(custom)[0]) == 1
    with pytest.raises(ValueError, match="'answer'.*fields found: \\['expected_answer', 'problem'\\]"):
        check_inputs(load_config(None, [f"eval.benchmarks=[{path}]", "eval.question_field=problem"]), ("evaluate",))
    # registered benchmarks keep their own mapping whatever the generic columns say
    assert load_benchmark("gsm8k", 1, 2, cfg.eval.columns_spec())[2].rows[0]["answer"] == "18"


def test_an_unknown_bare_benchmark_name_is_an_error():
    with pytest.raises(ValueError, match="'gsm8K' is not a registered benchmark"):
        parse_benchmark_spec("gsm8K")


@pytest.mark.parametrize("error", [ZeroDivisionError("x"), RecursionError("deep"), KeyError("k"), ValueError("v")])
def test_a_question_whose_gold_or_requests_cannot_be_built_is_rejected_alone(tmp_path, monkeypatch, error):
    from upft_ray.config import load_config
    from upft_ray.evaluation import benchmarks, requests

    path = _jsonl(tmp_path / "gsm.jsonl", [{"idx": i, "question": f"q{i}?", "answer": f"w\n#### {i}"} for i in range(6)])
    real_gold, real_messages = benchmarks.gsm8k_gold, requests.chat_messages

    def gold(answer):  # a gold answer the parser chokes on
        if answer.endswith("#### 2"):
            raise error
        return real_gold(answer)

    def messages(question, system_prompt):  # a question whose prompt cannot be built
        if question == "q4?":
            raise error
        return real_messages(question, system_prompt)

    monkeypatch.setitem(benchmarks.BENCHMARKS, "gsm8k", dataclasses.replace(
        benchmarks.BENCHMARKS["gsm8k"], gold=gold))
    monkeypatch.setattr(requests, "chat_messages", messages)
    cfg = load_config(None, [f"eval.benchmarks=[gsm8k:{path}]", "eval.decoding=sample", "eval.num_samples=2",
                             "eval.temperature=0.7"])
    built, rejected, read = requests.build_eval_requests(cfg)
    assert read == {"gsm8k": 6} and sorted({r["question_id"] for r in built}) == ["0", "1", "3", "5"]
    assert len(built) == 8  # both samples of every other question
    reasons = sorted(r["reason"] for r in rejected)
    assert reasons[0].startswith(f"gold_parse_error: {type(error).__name__}")
    assert reasons[1].startswith(f"request_build_error: {type(error).__name__}")
    assert len(set(r["question_id"] for r in built)) + len(rejected) == read["gsm8k"]
