"""`upft analyze collapse` on the tiny model: answer lengths, ending within t+2, P(EOS) after t tokens."""

import json
import math

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from typer.testing import CliRunner

from upft_ray.cli import app
from upft_ray.io.schema import EVAL_SCHEMA

PNG = b"\x89PNG\r\n\x1a\n"
OUTPUTS = ["Tom has 3 apples and gets 4 more, so he has 7 apples.", "7", "The answer is 12.",
           "Let us count: 5 + 6 = 11. So the answer is 11.", "9 apples", "Each friend gets 3."]


def _eval(path, lengths, finish):
    path.mkdir(parents=True)
    n = len(lengths)
    pq.write_table(pa.Table.from_pydict({
        "benchmark": ["arith-eval"] * n, "question_id": [f"q{i}" for i in range(n)], "sample_index": [0] * n,
        "question": [f"What is {i} + 4?" for i in range(n)], "prompt": ["p"] * n, "output": OUTPUTS[:n],
        "extracted_answer": ["1"] * n, "gold": ["1"] * n, "correct": [False] * n, "num_output_tokens": lengths,
        "finish_reason": finish, "grade_status": ["ok"] * n, "grade_error": [""] * n}, schema=EVAL_SCHEMA), path / "arith-eval.parquet")
    (path / "metrics.json").write_text(json.dumps({"benchmarks": {"arith-eval": {"accuracy": 0, "correct": 0,
                                                                                   "graded": n}}}))


def test_collapse_table_png_and_eos_probabilities_on_the_tiny_model(tmp_path, tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from upft_ray.config.types import UPFT_TASK_TEMPLATE
    from upft_ray.engine.prompts import chat_messages, render_prompt

    run = tmp_path / "run"
    (run / "sample").mkdir(parents=True)
    (run / "sample" / "manifest.json").write_text(json.dumps({"prefix_tokens": 4, "config": {
        "prefix_tokens": 4, "task_template": UPFT_TASK_TEMPLATE}}))
    # base: long answers; tuned: three of six stop within t + 2 = 6 tokens, one is cut by the limit.
    _eval(run / "eval_base", [40, 2, 30, 50, 35, 45], ["stop"] * 6)
    _eval(run / "eval", [5, 2, 6, 7, 30, 16], ["stop", "stop", "stop", "stop", "stop", "length"])
    (run / "train").mkdir()
    (run / "train" / "final").symlink_to(tiny_model_dir)
    result = CliRunner().invoke(app, ["analyze", "collapse", f"run_dir={run}", f"model={tiny_model_dir}",
                                      "--max-questions", "5", "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    out = run / "analysis" / "collapse"
    table = pd.read_parquet(out / "collapse.parquet").set_index("model")
    assert table.loc["eval", "share_end_within_t_plus_2"] == 3 / 6 and table.loc["eval_base", "share_end_within_t_plus_2"] == 1 / 6
    assert table.loc["eval", "share_cut_by_limit"] == 1 / 6 and table.loc["eval", "p50_tokens"] == 6.5
    assert table.loc["eval", "prefix_tokens"] == 4 and table.loc["eval", "answers"] == 6
    # teacher forcing: 5 questions; the answers "7" and "9 apples" have fewer than t = 4 tokens: counted, not measured
    assert table.loc["eval", "eos_questions"] == 3 and table.loc["eval", "eos_answers_shorter_than_t"] == 2
    eos = pd.read_parquet(out / "eos.parquet")
    assert set(eos["model"]) == {"eval", "eval_base"} and eos["p_eos_with_template"].notna().sum() == 6
    # the batched, padded figure equals one unbatched forward pass computed here
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    for suffix, column in ((UPFT_TASK_TEMPLATE, "p_eos_with_template"), ("", "p_eos_without_template")):
        ids = render_prompt(tok, chat_messages("What is 3 + 4?", "", suffix))[1] + tok.encode(OUTPUTS[3], add_special_tokens=False)[:4]
        with torch.no_grad():
            expected = torch.softmax(model(torch.tensor([ids])).logits[0, -1], -1)[tok.eos_token_id].item()
        got = eos[(eos["model"] == "eval") & (eos["question_id"] == "q3")][column].item()
        assert math.isclose(got, expected, rel_tol=1e-4, abs_tol=1e-7)
    assert table.loc["eval", "p_eos_with_template"] != table.loc["eval", "p_eos_without_template"]
    md = (out / "collapse.md").read_text()
    assert "| eval | 4 | 6 | 11.0 |" in md and "| 50.0% | 16.7% |" in md and "| 3 (2) |" in md
    assert json.loads((out / "collapse.json").read_text())["models"][0]["model"] == "eval_base"
    assert (out / "collapse.png").read_bytes()[:8] == PNG


def _sweep_with_a_tuned_run(tmp_path, t):
    """Return (the sweep dir, its one tuned run at prefix length ``t``), both evaluated, no weights."""
    from upft_ray.config.types import UPFT_TASK_TEMPLATE

    sweep = tmp_path / "sweep"
    _eval(sweep / "eval_base", [40, 2, 7, 50, 35, 45], ["stop"] * 6)
    run = sweep / f"t{t}-s1"
    (run / "sample").mkdir(parents=True)
    (run / "sample" / "manifest.json").write_text(json.dumps({"prefix_tokens": t, "config": {
        "prefix_tokens": t, "task_template": UPFT_TASK_TEMPLATE}}))
    _eval(run / "eval", [5, 2, 6, 7, 30, 16], ["stop"] * 6)
    return sweep, run


def test_a_sweeps_base_is_also_measured_at_each_tuned_runs_own_t(tmp_path, tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from upft_ray.engine.prompts import chat_messages, render_prompt

    sweep, _ = _sweep_with_a_tuned_run(tmp_path, 6)  # the base at the sweep's t (4); one tuned run at t = 6
    result = CliRunner().invoke(app, ["analyze", "collapse", f"run_dir={sweep}", f"model={tiny_model_dir}",
                                      "sample.prefix_tokens=4", "--max-questions", "5", "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    out = sweep / "analysis" / "collapse"
    table = pd.read_parquet(out / "collapse.parquet").set_index("model")
    assert list(table.index) == ["eval_base", "eval_base @ t=6", "t6-s1/eval"]
    assert list(table["prefix_tokens"]) == [4, 6, 6] and list(table["kind"]) == ["base", "base", "tuned"]
    # the base's answers, counted against each t: 2 and 7 tokens end within 6 + 2, only 2 within 4 + 2
    assert table.loc["eval_base", "share_end_within_t_plus_2"] == 1 / 6
    assert table.loc["eval_base @ t=6", "share_end_within_t_plus_2"] == 2 / 6
    assert math.isnan(table.loc["t6-s1/eval", "p_eos_with_template"])  # no weights at hand for the tuned run
    eos = pd.read_parquet(out / "eos.parquet")
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    for t, name in ((4, "eval_base"), (6, "eval_base @ t=6")):
        ids = render_prompt(tok, chat_messages("What is 0 + 4?", "", ""))[1] + \
            tok.encode(OUTPUTS[0], add_special_tokens=False)[:t]
        with torch.no_grad():
            expected = torch.softmax(model(torch.tensor([ids])).logits[0, -1], -1)[tok.eos_token_id].item()
        got = eos[(eos["model"] == name) & (eos["question_id"] == "q0")]["p_eos_without_template"].item()
        assert math.isclose(got, expected, rel_tol=1e-4, abs_tol=1e-7)
    assert "| eval_base @ t=6 | 6 | 6 |" in (out / "collapse.md").read_text()
    assert (out / "collapse.png").read_bytes()[:8] == PNG


def test_a_runs_kept_eos_stands_in_for_its_weights_once_they_are_gone(tmp_path, tiny_model_dir):
    from upft_ray.analysis.collapse import kept_eos_path, measure_collapse, measure_run_eos

    sweep, run = _sweep_with_a_tuned_run(tmp_path, 4)
    assert measure_run_eos(run, 4, max_questions=5, batch_size=2) is None  # no weights: nothing to measure
    (run / "train").mkdir()
    (run / "train" / "final").symlink_to(tiny_model_dir)
    kept = measure_run_eos(run, 4, max_questions=5, batch_size=2)
    assert kept == kept_eos_path(run, 4, 5) and len(pd.read_parquet(kept)) == 5
    columns = ["eos_questions", "p_eos_with_template", "p_eos_without_template", "median_p_eos_without_template"]
    measured = measure_collapse(sweep, str(tiny_model_dir), 4, max_questions=5, batch_size=2).set_index("model")
    (run / "train" / "final").unlink()  # the sweep's machine is gone, and the weights with it
    from_kept = measure_collapse(sweep, str(tiny_model_dir), 4, max_questions=5, batch_size=2).set_index("model")
    assert from_kept.loc["t4-s1/eval", columns].tolist() == measured.loc["t4-s1/eval", columns].tolist()
    assert from_kept.loc["t4-s1/eval", "eos_questions"] == 3
    # kept for other questions than asked for now: not used, and not passed off as this measurement
    other = measure_collapse(sweep, str(tiny_model_dir), 4, max_questions=3, batch_size=2).set_index("model")
    assert math.isnan(other.loc["t4-s1/eval", "p_eos_with_template"])
    # nor under another system prompt or chat template: P(EOS) under another prompt is another measurement
    for prompt in ({"system_prompt": "Be brief."}, {"chat_template": "qwen-math-upft"}):
        other = measure_collapse(sweep, str(tiny_model_dir), 4, max_questions=5, batch_size=2, **prompt)
        assert math.isnan(other.set_index("model").loc["t4-s1/eval", "p_eos_with_template"]), prompt


def test_a_current_kept_eos_is_read_not_measured_again_while_the_weights_are_at_hand(tmp_path, tiny_model_dir,
                                                                                    monkeypatch):
    import os

    from upft_ray.analysis import collapse

    sweep, run = _sweep_with_a_tuned_run(tmp_path, 4)
    (run / "train").mkdir()
    (run / "train" / "final").symlink_to(tiny_model_dir)
    kept = collapse.measure_run_eos(run, 4, max_questions=5, batch_size=2)
    measured = collapse.measure_collapse(sweep, str(tiny_model_dir), 4, max_questions=5, batch_size=2)
    calls = []
    real = collapse.eos_probabilities
    monkeypatch.setattr(collapse, "eos_probabilities", lambda path, *a, **k: calls.append(path) or real(path, *a, **k))
    again = collapse.measure_collapse(sweep, str(tiny_model_dir), 4, max_questions=5, batch_size=2)
    assert calls == [str(tiny_model_dir)]  # only the base: the tuned run's kept P(EOS) is current
    pd.testing.assert_frame_equal(again, measured)
    # weights written after the kept result (the run trained again): measured again, and kept anew
    os.utime(kept, (0, 0))
    collapse.measure_collapse(sweep, str(tiny_model_dir), 4, max_questions=5, batch_size=2)
    assert calls[1:] == [str(tiny_model_dir), str(run / "train" / "final")] and kept.stat().st_mtime > 0
    # under another system prompt: measured, not read
    collapse.measure_collapse(sweep, str(tiny_model_dir), 4, max_questions=5, batch_size=2, system_prompt="Be brief.")
    assert calls[3:] == [str(tiny_model_dir), str(run / "train" / "final")]


def test_collapse_without_evaluations_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(app, ["analyze", "collapse", f"run_dir={tmp_path}"])
    assert result.exit_code == 1 and "no evaluation" in result.output
