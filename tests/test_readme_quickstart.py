"""README's quickstart figures are the rendering of bench/results/quickstart_results.json, recorded with the
quickstart config as shipped; and the recording reads a finished run correctly."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from quickstart_lib import BEGIN, END, collect, readme_block, render_block, update_readme

from upft_ray.io.schema import EVAL_SCHEMA

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "quickstart_results.json"


def test_readme_quickstart_table_is_the_recorded_results():
    results = json.loads(RESULTS.read_text())
    assert readme_block((REPO / "README.md").read_text()) == render_block(results), (
        "README.md's quickstart table differs from bench/results/quickstart_results.json: run "
        "`.venv/bin/python bench/quickstart_record.py --reuse` (or without --reuse to re-run the quickstart)")


def test_recorded_results_come_from_the_shipped_quickstart_config(bench_script):
    results = json.loads(RESULTS.read_text())
    assert results["config_hash"] == bench_script("quickstart_record").quickstart_hash(), (
        "configs/quickstart.yaml changed since bench/results/quickstart_results.json was recorded: re-run "
        "`.venv/bin/python bench/quickstart_record.py`")


def _eval(dirpath: Path, right: set[int], n: int = 20) -> None:
    dirpath.mkdir(parents=True)
    pq.write_table(pa.Table.from_pydict({
        "benchmark": ["arith"] * n, "question_id": [f"q{i}" for i in range(n)], "sample_index": [0] * n,
        "question": ["?"] * n, "prompt": ["?"] * n, "output": ["x"] * n, "extracted_answer": ["1"] * n,
        "gold": ["1"] * n, "correct": [i in right for i in range(n)], "num_output_tokens": [5] * n,
        "finish_reason": ["stop"] * n, "grade_status": ["ok"] * n, "grade_error": [""] * n}, schema=EVAL_SCHEMA), dirpath / "arith.parquet")
    (dirpath / "metrics.json").write_text(json.dumps({"wall_time_s": 7.0, "benchmarks": {
        "arith": {"accuracy": len(right) / n, "correct": len(right), "graded": n}}}))


def _run(root: Path, train_config: dict) -> Path:
    run = root / "run"
    _eval(run / "eval_base", set(range(10)))  # base right on q0-q9
    _eval(run / "eval", set(range(4)))        # tuned right on q0-q3
    (run / "sample").mkdir()
    (run / "sample" / "manifest.json").write_text(json.dumps({
        "config": {"prefix_tokens": 8, "structure_ratio": 0.1, "method": "upft", "temperature": 0.6, "top_p": "model",
                   "top_k": "model"}, "wall_time_s": 60.04,
        "tokens": {"generated": 1234}, "engine_dtypes": ["bfloat16"]}))
    (run / "train").mkdir()
    (run / "train" / "manifest.json").write_text(json.dumps({
        "config": {"learning_rate": 5e-6, "epochs": 1, "adam_beta2": 0.95, "packing": False, "epoch_tail": "carry",
                   **train_config}, "wall_time_s": 200.0,
        "counts": {"tokens_tuned": 345}, "trained_with": {"precision": "bf16"}}))
    return run


def test_collect_and_render_a_hand_computed_run(tmp_path):
    run = _run(tmp_path, {"prefix_eos": "none", "loss_normalization": "example"})
    machine = {"date_utc": "2026-11-26 21:00", "cpu": "Some CPU", "cpu_count": 2, "cpu_native_bf16": True}
    results = collect(run, "abc123", "python bench/quickstart_record.py", machine, total_s=700.04)
    arith = results["benchmarks"]["arith"]
    # 10/20 vs 4/20 on the same 20 questions: -30 points; 6 discordant rows, all the base's:
    # exact McNemar p = 2 * 0.5^6 = 0.03125 -> worse
    assert arith["base"] == {"correct": 10, "graded": 20} and arith["upft"] == {"correct": 4, "graded": 20}
    assert arith["difference_pts"] == -30.0 and arith["p_value"] == pytest.approx(0.03125)
    assert arith["verdict"] == "worse" and arith["interval_pts"][1] < 0 < arith["paired"]
    assert results["recipe"]["deviations"] == [["train.prefix_eos", "none", "loss", "train.prefix_eos=loss"]]
    assert results["tokens"] == {"sampled": 1234, "tuned": 345}
    block = render_block(results)
    # Wilson 95%: 10/20 -> [29.9, 70.1], 4/20 -> [8.1, 41.6]
    assert "| arith | 50.0 (10/20) [29.9, 70.1] | 20.0 (4/20) [8.1, 41.6] | -30.0 [" in block
    assert "| 0.0312 | worse |" in block
    assert "Model trained: UPFT with `train.prefix_eos=none`" in block
    # the evaluations' metrics here predate the field: said, not guessed
    assert ("Precision (what `auto` became here; this CPU has native bf16): sample bfloat16, train bf16, eval base "
            "not recorded, eval UPFT not recorded.") in block
    assert "one override away: `upft run -c configs/quickstart.yaml train.prefix_eos=loss`" in block
    assert block.startswith(BEGIN) and block.endswith(END)
    assert ("Tokens sampled 1,234, tuned 345; wall time: sample 60 s, train 200 s, eval base 7 s, eval UPFT 7 s, "
            "total 700 s.") in block


def test_collect_names_what_is_missing(tmp_path):
    run = _run(tmp_path, {})
    (run / "eval" / "metrics.json").unlink()
    with pytest.raises(FileNotFoundError, match="eval/metrics.json is missing"):
        collect(run, "h", "cmd", {})


def test_update_readme_rewrites_only_the_block(tmp_path):
    results = collect(_run(tmp_path, {}), "h", "cmd", {"date_utc": "d", "cpu": "c", "cpu_count": 2})
    assert "Model trained: UPFT, the paper's recipe" in render_block(results)
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n{BEGIN}\nold figures\n{END}\n\ntail\n")
    assert update_readme(readme, results) is True
    text = readme.read_text()
    assert text.startswith("# title\n\n") and text.endswith("\n\ntail\n") and "old figures" not in text
    assert update_readme(readme, results) is False  # already the rendering
    for bad in ("no markers", f"{END}\n{BEGIN}", f"{BEGIN}{END}{BEGIN}{END}"):
        readme.write_text(bad)
        with pytest.raises(ValueError, match="needs exactly one"):
            update_readme(readme, results)
