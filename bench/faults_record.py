"""Record the "Faults survived" table: run every fault drill and write what each measured.

    .venv/bin/python bench/faults_record.py              # run the drills (~30 min on 2 cores), then render
    .venv/bin/python bench/faults_record.py --render     # render bench/results/faults.json again
    .venv/bin/python bench/faults_record.py --only tests/x.py ...   # re-run some drills, keep the other rows

The drills are the fault tests themselves (real engines, real Ray clusters on this machine, stand-in
engines where a fault is decided by the input; each test's docstring says what it does): with
``UPFT_FAULTS_OUT`` set they write their measurements into ``bench/results/faults.json``, which this
script turns into the table between markers in ``bench/RESULTS.md``. Rows lost and duplicated are
counted by each test from the run's output against its input. Run it with nothing else on the cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from doc_blocks import markers, replace_block

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "faults.json"
DRILLS = ["tests/sampling/test_engine_death.py", "tests/evaluation/test_eval_faults.py",
          "tests/evaluation/test_actor_killed.py",
          "tests/sampling/test_poison_chunk.py", "tests/evaluation/test_grading_faults.py",
          "tests/sampling/test_stragglers.py", "tests/io/test_fencing.py",
          "tests/multinode/test_sampling_node_loss.py", "tests/multinode/test_evaluation_node_loss.py",
          "tests/multinode/test_training_node_loss.py", "tests/multinode/test_job_retry.py"]
BEGIN, END = markers("faults-survived", "bench/faults_record.py")


def _seconds(value) -> str:
    return "-" if value is None else f"{value:g}"


def render(rows: dict) -> str:
    """Return the Markdown table of the recorded drills, one row per fault and stage."""
    lines = ["| fault | stage | detected after (s) | progress resumed after (s) | rows lost | rows duplicated |",
             "|---|---|---|---|---|---|"]
    for row in sorted(rows.values(), key=lambda r: (r["stage"], r["fault"])):
        lines.append(f"| {row['fault']} | {row['stage']} | {_seconds(row['detected_after_s'])} | "
                     f"{_seconds(row['resumed_after_s'])} | {row['rows_lost']} | {row['rows_duplicated']} |")
    dates = sorted(r["measured"] for r in rows.values())
    return "\n".join(lines) + f"\n\nMeasured {dates[0]} to {dates[-1]} by `python bench/faults_record.py` into " \
                              "`bench/results/faults.json` (each row's details there).\n"


def results_block(rows: dict) -> str:
    """Return RESULTS.md's faults-survived block (markers included)."""
    return f"{BEGIN}\n\n{render(rows)}\n{END}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--render", action="store_true", help="only render bench/results/faults.json")
    parser.add_argument("--only", nargs="+", choices=DRILLS, help="re-run these drills; their rows replace the old")
    args = parser.parse_args()
    if not args.render:
        if not args.only:
            RESULTS.unlink(missing_ok=True)
        env = {**os.environ, "UPFT_FAULTS_OUT": str(RESULTS)}
        done = subprocess.run([sys.executable, "-m", "pytest", "-m", "", "-q", "-p", "no:cacheprovider",
                               *(args.only or DRILLS)],
                              cwd=REPO, env=env, timeout=3 * 3600)
        if done.returncode != 0:
            print("[faults-record] a drill failed: the table is not rewritten", file=sys.stderr)
            return done.returncode
    rows = json.loads(RESULTS.read_text())
    changed = replace_block(REPO / "bench" / "RESULTS.md", BEGIN, END, results_block(rows))
    print(f"[faults-record] {len(rows)} drills; bench/RESULTS.md {'updated' if changed else 'unchanged'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
