"""Run the quickstart and record its result: bench/results/quickstart_results.json and README.md's quickstart table.

    .venv/bin/python bench/quickstart_record.py            # a fresh run into runs/quickstart-record
    .venv/bin/python bench/quickstart_record.py --reuse    # record the finished run there again
    .venv/bin/python bench/quickstart_record.py --count-before LOG --before-commit SHA   # an older output

The run is `bash scripts/quickstart.sh run_dir=runs/quickstart-record` (set-up, then `upft run -c
configs/quickstart.yaml`) with a fresh model cache, so its console output, captured into the run
directory and counted, is what a new user sees; a user's runs/quickstart is never touched. Run it with
nothing else on the cores; re-run it whenever configs/quickstart.yaml or the code it runs changes
(tests/test_readme_quickstart.py fails when the config changed). The stall watchdog's margin is written
into bench/RESULTS.md ("Stall timeout") from the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from doc_blocks import markers, replace_block  # noqa: E402
from quickstart_lib import collect, count_output, update_readme  # noqa: E402

from upft_ray.config import load_config  # noqa: E402
from upft_ray.config.hashing import config_hash, results_config  # noqa: E402
from upft_ray.io.manifests import write_json_atomic  # noqa: E402
from upft_ray.runtime.hardware import machine_facts  # noqa: E402

CONFIG = REPO / "configs" / "quickstart.yaml"
RESULTS = REPO / "bench" / "results" / "quickstart_results.json"
BEFORE = REPO / "bench" / "results" / "quickstart_output_before.json"
COMMAND = "bash scripts/quickstart.sh"
STALL_BEGIN, STALL_END = markers("stall-timeout", "bench/quickstart_record.py")


def quickstart_hash() -> str:
    """Return the hash of what the quickstart's results depend on (configs/quickstart.yaml as shipped)."""
    return config_hash(results_config(load_config(CONFIG)))


def run_quickstart(run_dir: Path) -> float:
    """Run the quickstart command into ``run_dir`` with a fresh model cache, its console output captured into
    ``run_dir/console.log``; return its wall time in seconds (also kept in ``run_dir/wall_time_s.json`` for
    ``--reuse``). Raises CalledProcessError when it fails."""
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    cache = run_dir.parent / f"{run_dir.name}-cache"
    shutil.rmtree(cache, ignore_errors=True)
    started = time.monotonic()
    with (run_dir / "console.log").open("w") as log:
        subprocess.run(["bash", "scripts/quickstart.sh", f"run_dir={run_dir}"], check=True, cwd=REPO, stdout=log,
                       stderr=subprocess.STDOUT, timeout=4 * 3600, env={**os.environ, "UPFT_CACHE": str(cache)})
    total_s = time.monotonic() - started
    write_json_atomic(run_dir / "wall_time_s.json", {"total": total_s})
    return total_s


def recorded_total(run_dir: Path) -> float | None:
    """Return the wall time a finished quickstart run in ``run_dir`` kept, or None where it kept none."""
    path = run_dir / "wall_time_s.json"
    return json.loads(path.read_text())["total"] if path.is_file() else None


def stall_block(results: dict, stall_timeout_s: float) -> str:
    """Return RESULTS.md's stall-timeout block: the longest waits for a token measured, against the default."""
    gaps = {k: v for k, v in results["max_progress_gap_s"].items() if v}
    longest = max(gaps.values(), default=0.0)
    rows = ", ".join(f"{k} {v:.2f} s" for k, v in gaps.items())
    return "\n".join([STALL_BEGIN, "", f"Longest wait for progress while busy, quickstart run of "
                      f"{results['machine']['date_utc']} UTC (SmolLM2-135M on 2 CPU cores, batches of up to "
                      f"hundreds of requests): {rows}. The default `engine.stall_timeout_s` {stall_timeout_s:g} s is "
                      f"{stall_timeout_s / longest:.0f}x the longest." if longest else "No gap measured.", "",
                      STALL_END])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path, default=REPO / "runs" / "quickstart-record")
    parser.add_argument("--reuse", action="store_true", help="record the finished run in --run-dir, do not rerun")
    parser.add_argument("--count-before", type=Path, help="count an older quickstart's captured output instead")
    parser.add_argument("--before-commit", default="", help="the commit that older output came from")
    args = parser.parse_args()
    if args.count_before:
        write_json_atomic(BEFORE, {"command": COMMAND, "commit": args.before_commit, **count_output(args.count_before)})
        print(f"[quickstart-record] wrote {BEFORE}")
        return 0
    total_s = recorded_total(args.run_dir) if args.reuse else run_quickstart(args.run_dir)
    # --reuse records the same run again (e.g. after a report's code changed): it keeps the run's machine
    # and date, and notes when it was recorded again
    reused = json.loads(RESULTS.read_text()) if args.reuse and RESULTS.is_file() else None
    machine = reused["machine"] if reused else machine_facts()
    results = collect(args.run_dir, quickstart_hash(), "python bench/quickstart_record.py", machine, total_s)
    if reused:
        results["recorded_again_utc"] = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    results["output"] = {"command": COMMAND, **count_output(args.run_dir / "console.log")}
    if BEFORE.is_file():
        results["output_before"] = json.loads(BEFORE.read_text())
    write_json_atomic(RESULTS, results)
    changed = update_readme(REPO / "README.md", results)
    timeout = load_config(CONFIG).sample.engine.stall_timeout_s
    replace_block(REPO / "bench" / "RESULTS.md", STALL_BEGIN, STALL_END, stall_block(results, timeout))
    print(f"[quickstart-record] wrote {RESULTS}; README.md {'updated' if changed else 'unchanged'}; "
          f"{results['output']['lines']} console lines")
    for name, b in results["benchmarks"].items():
        print(f"[quickstart-record] {name}: base {b['base']['correct']}/{b['base']['graded']}, UPFT "
              f"{b['upft']['correct']}/{b['upft']['graded']}, {b['difference_pts']:+.1f} pts, p = {b['p_value']:.3g}, "
              f"{b['verdict']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
