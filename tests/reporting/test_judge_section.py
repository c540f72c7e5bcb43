"""report.md shows the rule, judge and rule-or-judge accuracies of an evaluation an LLM judge graded too."""

import json

from upft_ray.reporting.report import build_report, judge_lines


def _metrics(judged: bool) -> dict:
    m = {"accuracy": 0.5, "correct": 2, "graded": 4, "questions": 4, "wall_time_s": 1.0}
    if judged:
        m.update(accuracy_judge=0.25, correct_judge=1, accuracy_rule_or_judge=0.75, correct_rule_or_judge=3,
                 judge_unparsable=1, judge_unanswered=0)
    out = {"benchmarks": {"gsm8k": m}, "wall_time_s": 1.0}
    return {**out, "judge": {"model": "KbsdJames/Omni-Judge"}} if judged else out


def test_the_judge_section_lists_three_accuracies_only_for_judged_evaluations(tmp_path):
    assert judge_lines({"base": _metrics(False)}) == []
    lines = judge_lines({"base": _metrics(False), "UPFT": _metrics(True)})
    assert lines[0] == "## Accuracy with the LLM judge"
    assert "| UPFT | `KbsdJames/Omni-Judge` | 50.0 / 25.0 / 75.0 (1 unparsable) |" in lines
    assert not any(line.startswith("| base") for line in lines)
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "metrics.json").write_text(json.dumps(_metrics(True)))
    assert "50.0 / 25.0 / 75.0 (1 unparsable)" in build_report(tmp_path)
