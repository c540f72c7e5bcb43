"""bench/precision_probe.py: which dtype reproduces a kept evaluation's answers."""

from pathlib import Path

import pandas as pd


def test_compare_counts_identical_answers_on_the_same_questions(bench_script):
    probe = bench_script("precision_probe")
    recorded = pd.DataFrame({"question_id": ["a", "b", "c", "d"], "sample_index": [0] * 4,
                             "output": ["1", "2", "3", "4"], "correct": [True, False, True, False]})
    probed = pd.DataFrame({"question_id": ["a", "b", "c"], "sample_index": [0] * 3, "output": ["1", "x", "3"],
                           "correct": [True, True, False]})
    assert probe.compare(recorded, probed) == {"questions": 3, "identical": 2, "correct": 2, "correct_recorded": 2}


def test_the_block_names_the_config_and_the_dtype_that_reproduced_most(bench_script):
    probe = bench_script("precision_probe")
    name, results, (begin, _) = probe.names(Path("configs/ablation-qwen05b.yaml"))
    assert (name, results.name) == ("qwen05b", "precision_qwen05b.json") and "precision-qwen05b" in begin
    report = {"command": "bench/precision_probe.py configs/ablation-qwen05b.yaml", "benchmark": "b", "questions": 2,
              "machine": {"date_utc": "d", "cpu": "c", "cpu_count": 2},
              "dtypes": {"bfloat16": {"questions": 2, "identical": 0, "correct": 1, "correct_recorded": 1},
                         "float32": {"questions": 2, "identical": 2, "correct": 1, "correct_recorded": 1}}}
    block = probe.render(report)
    assert block.startswith(begin) and "ran in **float32**" in block and "| float32 | 2 of 2 | 1 | 1 |" in block
