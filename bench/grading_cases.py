"""The grading case table (tests/grading/grading_cases.py) through raw math-verify and through upft-ray.

Raw math-verify is called the way its README shows a user calling it: ``verify(parse("$gold$"),
parse(output))`` for math, and with ``StringExtractionConfig`` (letters A-D) on both sides for the
multiple-choice cases. upft-ray is called as ``grade_batch`` calls it: ``grade`` / ``grade_letter``.
A case is right when the verdict equals the one written in the table. Writes the counts per defect
class, and the cases each grader gets wrong, to bench/results/grading_cases.json.

    PYTHONPATH=. .venv/bin/python bench/grading_cases.py
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "tests" / "grading"))

from grading_cases import LETTER_CASES, MATH_CASES  # noqa: E402

from upft_ray.grading import grade, grade_letter  # noqa: E402


def math_verify_verdict(output: str, gold: str, letters: bool) -> bool:
    """Raw math-verify's verdict on one case (an exception counts as a rejection, as in its verify)."""
    from math_verify import StringExtractionConfig, parse, verify

    try:
        if letters:
            config = [StringExtractionConfig()]
            return bool(verify(parse(gold, extraction_config=config), parse(output, extraction_config=config)))
        return bool(verify(parse(f"${gold}$"), parse(output)))
    except Exception:
        return False


def main() -> None:
    """Run every case through both graders; print a table and write bench/results/grading_cases.json."""
    started = time.time()
    by_class: dict[str, dict] = {}
    wrong: dict[str, list] = {"upft_ray": [], "math_verify": []}
    for cases, letters in ((MATH_CASES, False), (LETTER_CASES, True)):
        for cls, output, gold, expected in cases:
            ours = (grade_letter if letters else grade)(output, gold)[1]
            raw = math_verify_verdict(output, gold, letters)
            row = by_class.setdefault(cls, {"cases": 0, "upft_ray_right": 0, "math_verify_right": 0,
                                            "upft_ray_false_accepts": 0, "math_verify_false_accepts": 0})
            row["cases"] += 1
            for name, verdict in (("upft_ray", ours), ("math_verify", raw)):
                row[f"{name}_right"] += verdict is expected
                row[f"{name}_false_accepts"] += verdict and not expected
                if verdict is not expected:
                    wrong[name].append({"class": cls, "output": output, "gold": gold, "expected": expected})
    total = {key: sum(row[key] for row in by_class.values()) for key in next(iter(by_class.values()))}
    result = {"command": "PYTHONPATH=. .venv/bin/python bench/grading_cases.py", "total": total,
              "by_class": by_class, "wrong": wrong, "wall_time_s": round(time.time() - started, 1)}
    (REPO_ROOT / "bench" / "results" / "grading_cases.json").write_text(json.dumps(result, indent=2) + "\n")
    print("| class | cases | math-verify right | upft-ray right | math-verify false accepts | upft-ray false accepts |")
    print("|---|---|---|---|---|---|")
    for cls, row in [*by_class.items(), ("all", total)]:
        print(f"| {cls} | {row['cases']} | {row['math_verify_right']} | {row['upft_ray_right']} | "
              f"{row['math_verify_false_accepts']} | {row['upft_ray_false_accepts']} |")


if __name__ == "__main__":
    main()
