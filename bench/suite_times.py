"""Time the two test suites as CI runs them, and write README.md's "how long the suites take" block.

    .venv/bin/python bench/suite_times.py     # both suites (about an hour on 2 cores), then the block

Runs `bash scripts/test.sh` (the default suite) and `bash scripts/test.sh -m slow`, one after the other,
each with `--durations=5`, and records each one's wall time, pytest's counts and its slowest tests in
``bench/results/suite_times.json``. Run it with nothing else on the cores. A suite that fails is
recorded as failed, and the block says so.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

from doc_blocks import markers, replace_block

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "suite_times.json"
BEGIN, END = markers("suite-times", "bench/suite_times.py")
SUITES = {"default": ["bash", "scripts/test.sh", "--durations=5", "-q"],
          "slow": ["bash", "scripts/test.sh", "-m", "slow", "--durations=5", "-q"]}


def time_suite(command: list[str]) -> dict:
    """Run one suite; return its wall time, exit status, pytest's summary line and its slowest tests."""
    started = time.monotonic()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=3 * 3600)
    wall = time.monotonic() - started
    lines = done.stdout.splitlines()
    summary = next((line.strip("= ") for line in reversed(lines) if re.search(r"\d+ (passed|failed)", line)), "")
    slowest = [line.split(None, 2) for line in lines if re.match(r"^\d+\.\d+s (call|setup|teardown)", line)]
    return {"command": " ".join(command), "wall_s": round(wall, 1), "returncode": done.returncode,
            "summary": summary, "slowest": [[float(s[0].rstrip("s")), s[2]] for s in slowest[:5]]}


def render(results: dict) -> str:
    """Return the README block for ``results``."""
    rows = [f"| `{r['command']}` | {r['wall_s'] / 60:.1f} min | {r['summary'] or 'no summary'}"
            f"{'' if r['returncode'] == 0 else ' (FAILED)'} |" for r in results["suites"].values()]
    return "\n".join([BEGIN, "", "| suite | wall time | pytest |", "|---|---|---|", *rows, "",
                      f"Measured {results['date_utc']} UTC on this project's 2-core machine by "
                      "`python bench/suite_times.py` (`bench/results/suite_times.json` lists each suite's slowest "
                      "tests).", "", END])


def main() -> int:
    results = {"date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
               "suites": {name: time_suite(command) for name, command in SUITES.items()}}
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    replace_block(REPO / "README.md", BEGIN, END, render(results))
    for name, r in results["suites"].items():
        print(f"[suite-times] {name}: {r['wall_s']:.0f} s, {r['summary']} (exit {r['returncode']})")
    return max(r["returncode"] for r in results["suites"].values())


if __name__ == "__main__":
    sys.exit(main())
