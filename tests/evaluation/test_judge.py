"""The optional LLM judge (eval.judge): verdict rows, the rule-or-judge merge, its metrics and config, and one
real evaluation judged by the bundled model through Ray + vLLM (its verdicts' quality is not the point)."""

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import tiny_overrides

from upft_ray.config import load_config
from upft_ray.config.hashing import base_results_config, config_hash, results_config
from upft_ray.evaluation.judge import JudgeContext, finish_judge_unit, read_judge_chunk, verdict_row, with_verdicts
from upft_ray.evaluation.metrics import benchmark_metrics
from upft_ray.evaluation.plan import eval_identity
from upft_ray.io.schema import EVAL_JUDGED_SCHEMA, EVAL_SCHEMA, JUDGE_SCHEMA
from upft_ray.runtime.placement import resolve_auto_resources

REPORT = "\n7\n\n## Equivalence Judgement\n{}\n\n## Justification\nSame number.\n\n=== report over ==="


def test_a_verdict_row_is_ok_unparsable_or_unanswered():
    assert verdict_row("", "stop", REPORT.format("TRUE")) == {
        "judge_correct": True, "judge_status": "ok", "judge_answer": "7", "judge_output": REPORT.format("TRUE")}
    assert verdict_row("", "length", REPORT.format("FALSE"))["judge_correct"] is False
    odd = verdict_row("", "length", "## Equivalence Judgement\nTR")
    assert (odd["judge_correct"], odd["judge_status"]) == (None, "unparsable")
    assert verdict_row("", "prompt_too_long", "") == {"judge_correct": None, "judge_status": "unanswered",
                                                      "judge_answer": "", "judge_output": "prompt_too_long"}
    assert verdict_row("quarantined: kills engines", "", "")["judge_output"] == "quarantined: kills engines"


def test_a_judged_unit_has_one_verdict_per_row_and_requests_continue_from_the_prefill():
    spec = [{"record": i, "benchmark": "b", "question_id": f"q{i}", "sample_index": 0, "question": " Q? ",
             "gold": "7", "output": "\\boxed{7}"} for i in range(3)]
    requests = read_judge_chunk(spec, JudgeContext(load_config(None).eval.judge, (10, 11)))
    assert requests["continue_from_token_ids"].tolist() == [[10, 11]] * 3
    assert (requests["temperature"] == 0.0).all() and (requests["max_tokens"] == 300).all()
    assert json.loads(requests["messages"][0])[-1]["content"].startswith("**Question**:\nQ?\n\n**Reference Answer**\n7")
    rows = requests.assign(response_text=[REPORT.format("TRUE"), "nonsense", ""], num_response_tokens=[9, 3, 0],
                           finish_reason=["stop", "length", "request_failed: boom"])
    table, rejected, counts = finish_judge_unit(rows, None)
    assert table.schema == JUDGE_SCHEMA and rejected == []
    assert counts == {"records": 3, "kept": 3, "rejected": 0, "generated_tokens": 12}
    assert table.column("judge_status").to_pylist() == ["ok", "unparsable", "unanswered"]
    assert table.column("judge_correct").to_pylist() == [True, None, None]


def test_rule_or_judge_is_the_or_of_both_and_metrics_count_each_way():
    graded = pd.DataFrame({"benchmark": ["b"] * 4, "question_id": ["1", "2", "3", "4"], "sample_index": [0] * 4,
                           "correct": [True, False, False, True], "extracted_answer": ["1", "2", "", "4"],
                           "grade_status": ["ok", "ok", "missing", "ok"], "num_output_tokens": [5] * 4})
    verdicts = pd.DataFrame({"benchmark": ["b"] * 4, "question_id": ["4", "3", "2", "1"], "sample_index": [0] * 4,
                             "judge_correct": [False, None, True, None],
                             "judge_status": ["ok", "unparsable", "ok", "unanswered"], "judge_answer": [""] * 4,
                             "judge_output": [""] * 4})
    judged = with_verdicts(graded, verdicts)
    assert judged["question_id"].tolist() == ["1", "2", "3", "4"]
    assert judged["correct_rule_or_judge"].tolist() == [True, True, False, True]
    m = benchmark_metrics(judged, rows_read=4, rows_rejected=0, k=1)
    assert (m["accuracy"], m["accuracy_judge"], m["accuracy_rule_or_judge"]) == (0.5, 0.25, 0.75)
    assert (m["correct_judge"], m["correct_rule_or_judge"], m["judge_unparsable"], m["judge_unanswered"]) == (1, 3, 1, 1)
    assert "accuracy_judge" not in benchmark_metrics(graded, rows_read=4, rows_rejected=0, k=1)
    with pytest.raises(RuntimeError, match="1 rows without one"):
        with_verdicts(graded, verdicts.iloc[1:])


def test_the_judge_is_off_by_default_hashed_only_when_set_and_outside_the_answers_identity(tmp_path):
    off, on = load_config(None), load_config(None, ["eval.judge.model=smollm2-135m-instruct"])
    assert off.eval.judge.model == "" and "judge" not in results_config(off)["eval"]
    assert results_config(on)["eval"]["judge"]["model"] == "smollm2-135m-instruct"
    assert config_hash(base_results_config(on)) != config_hash(base_results_config(off))
    placed = load_config(None, ["eval.judge.model=smollm2-135m-instruct", "eval.judge.engine.num_replicas=3"])
    assert config_hash(results_config(placed)) == config_hash(results_config(on))  # placement is in no hash
    assert eval_identity(on, str(tmp_path)) == eval_identity(off, str(tmp_path))  # answers are reused
    assert EVAL_JUDGED_SCHEMA.names[:len(EVAL_SCHEMA)] == EVAL_SCHEMA.names


def test_judge_settings_are_checked_and_auto_replicas_counted():
    with pytest.raises(Exception, match="eval.judge.max_new_tokens: 600 tokens do not fit in eval.judge.engine"):
        load_config(None, ["eval.judge.engine.max_model_len=512", "eval.judge.max_new_tokens=600"])
    with pytest.raises(Exception, match="eval.judge.model: 'no such model'"):
        load_config(None, ["eval.judge.model=no such model"])
    cfg = load_config(None, ["eval.judge.model=smollm2-135m-instruct", "eval.judge.engine.num_replicas=auto",
                             "eval.judge.engine.gpus_per_replica=1"])
    placed = resolve_auto_resources(cfg, 4.0)
    assert placed.eval.judge.engine.num_replicas == 4 and placed.eval.engine.num_replicas == 1


def test_an_evaluation_judged_by_the_bundled_model_records_three_verdicts_and_resumes(tmp_path, smollm2_dir,
                                                                                      ray_local):
    # The answers come from a stand-in engine (\\boxed{0} to every question: right where the gold is 0); the judge
    # is the bundled model on vLLM. The last question's judge prompt does not fit the judge's context.
    from upft_ray.evaluation.stage import run_evaluate

    questions = tmp_path / "questions.jsonl"
    golds = ["0", "5", "0", "0"]
    questions.write_text("".join(json.dumps({"id": f"q{i}", "question": f"How many apples are left? (#{i})" + (
        " seven apples" * 400 if i == 3 else ""), "answer": g}) + "\n" for i, g in enumerate(golds)))
    overrides = tiny_overrides(tmp_path / "run", smollm2_dir) + [
        f"eval.benchmarks=[{questions}]", "eval.engine.backend=engines:BoxedZeroEngine",
        "eval.judge.model=smollm2-135m-instruct", "eval.judge.max_new_tokens=40",
        "eval.judge.engine.max_model_len=1536", "eval.judge.engine.batch_size=2"]
    cfg, out = load_config(None, overrides), tmp_path / "eval"
    metrics = run_evaluate(cfg, str(smollm2_dir), out, "judged")
    m = metrics["benchmarks"]["questions"]
    rows = pd.read_parquet(out / "questions.parquet")
    assert pq.read_schema(out / "questions.parquet").names == EVAL_JUDGED_SCHEMA.names
    assert rows["correct"].tolist() == [True, False, True, True]
    assert rows["judge_status"].tolist()[3] == "unanswered" and rows["judge_output"].tolist()[3] == "prompt_too_long"
    assert set(rows["judge_status"][:3]) <= {"ok", "unparsable"} and (rows["judge_output"] != "").all()
    assert (rows["correct_rule_or_judge"] == (rows["correct"] | rows["judge_correct"].eq(True))).all()
    assert m["correct_rule_or_judge"] == int(rows["correct_rule_or_judge"].sum()) >= m["correct"] == 3
    assert m["correct_judge"] == int(rows["judge_correct"].eq(True).sum())
    assert m["judge_unparsable"] == int((rows["judge_status"] == "unparsable").sum()) and m["judge_unanswered"] == 1
    assert metrics["judge"]["model"] == "smollm2-135m-instruct"
    assert metrics["judge"]["chunks"] == {"total": 2, "reused": 0, "written": 2}
    # what each engine ran in: the judge's vLLM its resolved dtype; the stand-in says none, and none is guessed
    from upft_ray.engine.settings import engine_dtype
    assert metrics["judge"]["engine_dtypes"] == [engine_dtype(cfg.eval.judge.engine.dtype)]
    assert metrics["engine_dtypes"] == []

    again = run_evaluate(cfg, str(smollm2_dir), out, "judged")  # everything committed: no engine starts
    assert again["judge"]["chunks"] == {"total": 2, "reused": 2, "written": 0}
    assert again["judge"]["engine_dtypes"] == metrics["judge"]["engine_dtypes"]  # from the committed units
    assert again["benchmarks"] == metrics["benchmarks"]
    pd.testing.assert_frame_equal(pd.read_parquet(out / "questions.parquet"), rows)

    other = load_config(None, overrides + ["eval.judge.max_new_tokens=41"])
    with pytest.raises(ValueError, match="another judge"):  # verdicts of two judges are never mixed
        run_evaluate(other, str(smollm2_dir), out, "judged")
    rule_only = run_evaluate(load_config(None, overrides + ["eval.judge.model="]), str(smollm2_dir), out, "judged")
    assert "judge" not in rule_only and "accuracy_judge" not in rule_only["benchmarks"]["questions"]
    assert pq.read_schema(out / "questions.parquet").names == EVAL_SCHEMA.names
