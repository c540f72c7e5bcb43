"""`upft report`: one run's report, and a comparison table + PNG over several runs, with statistics."""

import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq

from upft_ray.io.schema import EVAL_SCHEMA
from upft_ray.reporting.report import build_report, write_comparison

# The official recipe's sampling and optimiser settings, as a real manifest records them
PAPER_SAMPLING = {"temperature": 0.6, "top_p": "model", "top_k": "model"}
PAPER_TRAINING = {"adam_beta2": 0.95, "packing": False, "epoch_tail": "carry"}


def _eval_file(path, bench, correct, ids=None):
    """An EVAL_SCHEMA file with one greedy row per question; ``correct`` lists each question's outcome."""
    ids = ids or [f"q{i}" for i in range(len(correct))]
    n = len(ids)
    pq.write_table(pa.Table.from_pydict({
        "benchmark": [bench] * n, "question_id": ids, "sample_index": [0] * n, "question": ["?"] * n,
        "prompt": ["?"] * n, "output": ["x"] * n, "extracted_answer": ["1"] * n, "gold": ["1"] * n,
        "correct": list(correct), "num_output_tokens": [5] * n, "finish_reason": ["stop"] * n,
        "grade_status": ["ok"] * n, "grade_error": [""] * n}, schema=EVAL_SCHEMA),
        path / f"{bench}.parquet")


def _fake_run(root, name, base_acc, upft_acc, per_question=True):
    run = root / name
    for sub, acc in (("eval_base", base_acc), ("eval", upft_acc)):
        (run / sub).mkdir(parents=True)
        (run / sub / "metrics.json").write_text(json.dumps({"wall_time_s": 1.0, "benchmarks": {
            "gsm8k": {"accuracy": acc, "correct": int(acc * 20), "graded": 20},
            "math500": {"accuracy": acc / 2, "correct": int(acc * 10), "graded": 20}}}))
        if per_question:
            _eval_file(run / sub, "gsm8k", [i < int(acc * 20) for i in range(20)])
            _eval_file(run / sub, "math500", [i < int(acc * 10) for i in range(20)])
    (run / "sample").mkdir()
    (run / "sample" / "manifest.json").write_text(json.dumps({
        "model": "m", "seed": 1, "config": {"prefix_tokens": 8, "structure_ratio": 0.1, **PAPER_SAMPLING}, "wall_time_s": 2.0,
        "counts": {"rows_in": 10, "rows_written": 10, "rows_rejected": 0, "prefix_rows": 9, "full_rows": 1},
        "tokens": {"generated": 1234, "generated_prefix": 72, "generated_full": 1162, "prompt": 500}}))
    (run / "train").mkdir()
    (run / "train" / "manifest.json").write_text(json.dumps({
        "wall_time_s": 3.0, "counts": {"tokens_tuned": 345, "examples": 10, "steps": 2}}))
    return run


def test_report_compares_runs_and_writes_png(tmp_path):
    a, b = _fake_run(tmp_path, "run-a", 0.5, 0.6), _fake_run(tmp_path, "run-b", 0.5, 0.4)
    out = subprocess.run([sys.executable, "-m", "upft_ray.cli", "report", str(a), str(b), "--out", str(tmp_path / "cmp")],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    # 12/20 -> Wilson [38.7, 78.1]; 6/20 -> [14.5, 51.9]
    assert "| run-a | UPFT | 60.0 [38.7, 78.1] | 30.0 [14.5, 51.9] | 45.0 | 1,234 | 345 |" in out
    assert "| run-b | base | 50.0 [29.9, 70.1] | 25.0 [11.2, 46.9] | 37.5 | - | - |" in out
    # run-a: the tuned model is right on questions 0-11, the base on 0-9: 2 discordant rows, all one way;
    # exact McNemar p = 2 * (1/2)^2 = 0.5.
    assert "| run-a UPFT | base | gsm8k | 20 | 60.0 | 50.0 | +10.0 |" in out and "| 2 / 0 | 0.500 | within noise | 0 / 0 |" in out
    assert "| UPFT | 2 | 10 x 1 | 1,234 | 345 | - | - | - | - |" in out  # token efficiency, no RFT/SFT run
    png = tmp_path / "cmp" / "comparison.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_on_one_run_writes_report_md(tmp_path):
    run = _fake_run(tmp_path, "run-a", 0.5, 0.6)
    out = subprocess.run([sys.executable, "-m", "upft_ray.cli", "report", str(run)],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    assert "| UPFT | 60.0 (12/20) [38.7, 78.1] | 30.0 (6/20) [14.5, 51.9] |" in out and (run / "report.md").is_file()
    assert "## UPFT vs base (paired on the same questions)" in out and "Wilson" in out and "McNemar" in out


def test_paired_test_finds_a_real_drop_and_counts_unpaired_questions(tmp_path):
    run = _fake_run(tmp_path, "run", 0.5, 0.5)
    # 100 questions: base right on 0-29 (30%), tuned right on 0-12 (13%): 17 discordant rows, all one way:
    # p = 2 / 2^17 = 1.5e-05. The tuned run also lacks q99 and has a question the base never saw.
    _eval_file(run / "eval_base", "gsm8k", [i < 30 for i in range(100)], [f"q{i}" for i in range(100)])
    _eval_file(run / "eval", "gsm8k", [i < 13 for i in range(100)], [f"q{i}" for i in range(99)] + ["new"])
    text = build_report(run)
    assert "| UPFT | base | gsm8k | 99 | 13.1 | 30.3 | -17.2 |" in text
    assert "| 0 / 17 | 1.5e-05 | worse | 1 / 1 |" in text


def test_runs_without_per_question_files_say_so(tmp_path):
    a = _fake_run(tmp_path, "old", 0.5, 0.6, per_question=False)
    md, _ = write_comparison([a], tmp_path / "cmp")
    assert "not compared: no per-question results" in md.read_text() and "gsm8k.parquet missing" in md.read_text()


def test_report_says_whether_upft_beat_the_base_and_names_the_recipe(tmp_path):
    run = _fake_run(tmp_path, "run", 0.5, 0.6)
    text = build_report(run)
    # gsm8k: UPFT right on 0-11, base on 0-9: +10.0 pts, 2 discordant rows all one way, exact McNemar p = 0.5
    assert ("- gsm8k: UPFT 60.0% vs base 50.0% on 20 questions, difference +10.0 pts" in text
            and "p = 0.5: **within noise** (no difference beyond noise: UPFT did not beat the base)." in text)
    assert text.index("## Verdict") < text.index("## Accuracy")
    assert "Recipe: the paper's UPFT ingredients" in text  # the fake manifests hold no deviation
    manifest = run / "train" / "manifest.json"
    data = json.loads(manifest.read_text())
    data["config"] = {"learning_rate": 1e-6, "epochs": 2, "prefix_eos": "none", "loss_normalization": "token",
                      **PAPER_TRAINING}
    manifest.write_text(json.dumps(data))
    text = build_report(run)
    assert "learning rate 1e-06, 2 epoch(s)." in text
    assert ("Recipe: **not the paper's setting** in 2 of 16 ingredients: `train.prefix_eos` = none (paper: loss); "
            "`train.loss_normalization` = token (paper: example). The paper's setting is these overrides away: "
            "`train.prefix_eos=loss train.loss_normalization=example`." in text)


def test_report_verdict_better_and_worse(tmp_path):
    # 20 questions: UPFT right on all, base on none -> 20 discordant rows one way, p = 2 * 0.5^20
    better = build_report(_fake_run(tmp_path, "better", 0.0, 1.0))
    assert "difference +100.0 pts" in better and "**better** (UPFT beat the base)" in better
    worse = build_report(_fake_run(tmp_path, "worse", 1.0, 0.0))
    assert "**worse** (UPFT is worse than the base)" in worse


def test_report_shows_the_run_label(tmp_path):
    run = _fake_run(tmp_path, "run", 0.5, 0.5)
    assert "**" not in build_report(run).split("## Verdict")[0]  # no run.json: no label
    (run / "run.json").write_text(json.dumps({"label": "best variant of the ablation (eos-none)", "config": {}}))
    assert build_report(run).startswith("# UPFT run: run\n\n**best variant of the ablation (eos-none)**\n")
