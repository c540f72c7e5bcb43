"""Time the two test suites as CI runs them, and write README.md's "how long the suites take" block.

    .venv/bin/python bench/suite_times.py               # both suites (about an hour on 2 cores), then the block
    .venv/bin/python bench/suite_times.py --only slow   # that suite again; the other's record is kept

Runs `bash scripts/test.sh` (the default suite) and `bash scripts/test.sh -m slow`, one after the other,
each with `--durations=5`, and records each one's wall time, pytest's counts and its slowest tests in
``bench/results/suite_times.json`` (each suite's output in ``bench/results/suite_times_<suite>.log``,
not committed). Run it with nothing else on the cores. A suite that fails is recorded as failed, with its
failing tests, and the block says so.
"""

from __future__ import annotations

import argparse
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


def time_suite(name: str) -> dict:
    """Run the suite ``name`` of SUITES; return its wall time, exit status, pytest's summary line, failing and
    slowest tests."""
    command = SUITES[name]
    started = time.monotonic()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=3 * 3600)
    wall = time.monotonic() - started
    lines = done.stdout.splitlines()
    summary = next((line.strip("= ") for line in reversed(lines) if re.search(r"\d+ (passed|failed)", line)), "")
    slowest = [line.split(None, 2) for line in lines if re.match(r"^\d+\.\d+s (call|setup|teardown)", line)]
    failed = [line.split(None, 2)[1] for line in lines if re.match(r"^(FAILED|ERROR) ", line)]
    (RESULTS.parent / f"suite_times_{name}.log").write_text(done.stdout[-200_000:] + done.stderr[-20_000:])
    return {"command": " ".join(command), "wall_s": round(wall, 1), "returncode": done.returncode,
            "summary": summary, "failed": failed, "measured": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
            "slowest": [[float(s[0].rstrip("s")), s[2]] for s in slowest[:5]]}


def render(results: dict) -> str:
    """Return the README block for ``results``."""
    rows = [f"| `{r['command']}` | {r['wall_s'] / 60:.1f} min | {r['summary'] or 'no summary'}"
            f"{'' if r['returncode'] == 0 else ' (FAILED: ' + ', '.join(r.get('failed', [])) + ')'} "
            f"| {r.get('measured', results['date_utc'])} |" for r in results["suites"].values()]
    return "\n".join([BEGIN, "", "| suite | wall time | pytest | measured (UTC) |", "|---|---|---|---|", *rows, "",
                      "Measured on this project's 2-core machine (set-up included) by "
                      "`python bench/suite_times.py` (`bench/results/suite_times.json` lists each suite's slowest "
                      "tests).", "", END])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(SUITES), help="time this suite again, keep the other's record")
    args = parser.parse_args()
    kept = json.loads(RESULTS.read_text())["suites"] if args.only and RESULTS.is_file() else {}
    suites = {name: time_suite(name) if args.only in (None, name) else kept[name] for name in SUITES}
    results = {"date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "suites": suites}
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    replace_block(REPO / "README.md", BEGIN, END, render(results))
    for name, r in results["suites"].items():
        print(f"[suite-times] {name}: {r['wall_s']:.0f} s, {r['summary']} (exit {r['returncode']})")
    return max(r["returncode"] for r in results["suites"].values())


if __name__ == "__main__":
    sys.exit(main())
