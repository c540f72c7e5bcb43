"""`upft report`: one run's report, and a comparison table + PNG over several runs."""

import json
import subprocess
import sys


def _fake_run(root, name, base_acc, upft_acc):
    run = root / name
    for sub, acc in (("eval_base", base_acc), ("eval", upft_acc)):
        (run / sub).mkdir(parents=True)
        (run / sub / "metrics.json").write_text(json.dumps({"wall_time_s": 1.0, "benchmarks": {
            "gsm8k": {"accuracy": acc, "correct": int(acc * 20), "graded": 20},
            "math500": {"accuracy": acc / 2, "correct": int(acc * 10), "graded": 20}}}))
    (run / "sample").mkdir()
    (run / "sample" / "manifest.json").write_text(json.dumps({
        "model": "m", "seed": 1, "config": {"prefix_tokens": 8, "structure_ratio": 0.1}, "wall_time_s": 2.0,
        "counts": {"rows_in": 10, "rows_written": 10, "rows_rejected": 0, "prefix_rows": 9, "full_rows": 1},
        "tokens": {"generated": 1234, "generated_prefix": 72, "generated_full": 1162, "prompt": 500}}))
    (run / "train").mkdir()
    (run / "train" / "manifest.json").write_text(json.dumps({
        "wall_time_s": 3.0, "counts": {"tokens_tuned": 345, "examples": 10, "steps": 2}}))
    return run


def test_report_compares_runs_and_writes_png(tmp_path):
    a, b = _fake_run(tmp_path, "run-a", 0.5, 0.6), _fake_run(tmp_path, "run-b", 0.5, 0.4)
    out = subprocess.run([sys.executable, "-m", "upft_ray.cli", "report", str(a), str(b), "--out", str(tmp_path / "cmp")],
                         capture_output=True, text=True, check=True).stdout
    assert "| run-a | UPFT | 60.0 | 30.0 | 45.0 | 1,234 | 345 |" in out
    assert "| run-b | base | 50.0 | 25.0 | 37.5 | - | - |" in out
    assert "| UPFT | 2 | 10 x 1 | 1,234 | 345 | - | - | - | - |" in out  # token efficiency, no RFT/SFT run
    png = tmp_path / "cmp" / "comparison.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_on_one_run_writes_report_md(tmp_path):
    run = _fake_run(tmp_path, "run-a", 0.5, 0.6)
    out = subprocess.run([sys.executable, "-m", "upft_ray.cli", "report", str(run)],
                         capture_output=True, text=True, check=True).stdout
    assert "| UPFT | 60.0 (12/20) | 30.0 (6/20) |" in out and (run / "report.md").is_file()
