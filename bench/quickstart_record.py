"""Run the quickstart and record its result: bench/results/quickstart_results.json and README.md's quickstart table.

    .venv/bin/python bench/quickstart_record.py            # a fresh run into runs/quickstart-record
    .venv/bin/python bench/quickstart_record.py --reuse    # record the finished run there again

The run is `upft run -c configs/quickstart.yaml` (what `bash scripts/quickstart.sh` runs after set-up),
in its own run directory so a user's runs/quickstart is never touched. Run it with nothing else on the
cores; re-run it whenever configs/quickstart.yaml changes (tests/test_readme_quickstart.py fails until then).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from quickstart_lib import collect, update_readme  # noqa: E402

from upft_ray.config import load_config  # noqa: E402
from upft_ray.config.hashing import (
    config_hash,  # noqa: E402
    results_config,  # noqa: E402
)
from upft_ray.io.manifests import write_json_atomic  # noqa: E402
from upft_ray.runtime.hardware import machine_facts  # noqa: E402

CONFIG = REPO / "configs" / "quickstart.yaml"
RESULTS = REPO / "bench" / "results" / "quickstart_results.json"


def quickstart_hash() -> str:
    """Return the hash of what the quickstart's results depend on (configs/quickstart.yaml as shipped)."""
    return config_hash(results_config(load_config(CONFIG)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path, default=REPO / "runs" / "quickstart-record")
    parser.add_argument("--reuse", action="store_true", help="record the finished run in --run-dir, do not rerun")
    args = parser.parse_args()
    total_s = None
    if not args.reuse:
        shutil.rmtree(args.run_dir, ignore_errors=True)
        upft = Path(sys.executable).parent / "upft"
        started = time.monotonic()
        subprocess.run([str(upft), "run", "-c", str(CONFIG), f"run_dir={args.run_dir}"], check=True, cwd=REPO,
                       timeout=4 * 3600)
        total_s = time.monotonic() - started
    results = collect(args.run_dir, quickstart_hash(), "python bench/quickstart_record.py", machine_facts(), total_s)
    write_json_atomic(RESULTS, results)
    changed = update_readme(REPO / "README.md", results)
    print(f"[quickstart-record] wrote {RESULTS}; README.md {'updated' if changed else 'unchanged'}")
    for name, b in results["benchmarks"].items():
        print(f"[quickstart-record] {name}: base {b['base']['correct']}/{b['base']['graded']}, UPFT "
              f"{b['upft']['correct']}/{b['upft']['graded']}, {b['difference_pts']:+.1f} pts, p = {b['p_value']:.3g}, "
              f"{b['verdict']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
