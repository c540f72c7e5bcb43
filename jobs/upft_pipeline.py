"""Ray job entry point: the same library calls as `upft`, on the cluster the job was submitted to.

    ray job submit -- python jobs/upft_pipeline.py --config configs/quickstart.yaml \
        [--config OTHER.yaml ...] [--stage run|sample|train|evaluate|sweep] [key=value ...]

Each --config runs in turn (a UPFT run, then its SFT baseline); the overrides apply to every one.
A rerun of the same job resumes each stage from what its run directory holds. The job exits
non-zero (so the RayJob shows FAILED) when a stage raises or a sweep has a failed or refused run;
the configs after a sweep with failed runs still run. A run directory another attempt holds, or
that other code wrote, is refused with exit status 2.
"""

import argparse
import json
import sys
from pathlib import Path

from upft_ray import api
from upft_ray.orchestration.preflight import check_ready

_STAGES = {"run": ("sample", "train", "evaluate"), "sample": ("sample",), "train": ("train",),
           "evaluate": ("evaluate",)}


def _fail(err: Exception) -> None:
    print(f"error: {err}", file=sys.stderr, flush=True)
    sys.exit(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, action="append", help="pipeline YAML (repeatable)")
    parser.add_argument("--stage", default="run", choices=["run", "sample", "train", "evaluate", "sweep"])
    parser.add_argument("--verbose", action="store_true", help="also print Ray's and vLLM's own logs")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    args = parser.parse_args()
    api.configure_logging(1 if args.verbose else 0)
    # Load every config first: a typo in the second must not surface after a day of the first.
    # A submitted job joins the cluster it runs on rather than starting a private Ray.
    try:
        configs = [api.load_config(path, ["ray.address=auto", *args.overrides]) for path in args.config]
        if args.stage != "sweep":  # a sweep checks each of its runs itself
            for cfg in configs:
                check_ready(cfg, _STAGES[args.stage])
    except (api.ConfigError, FileNotFoundError) as err:
        _fail(err)
    status = 0
    for cfg in configs:
        try:
            result = getattr(api, args.stage)(cfg)
        except (api.LeaseHeld, api.LeaseError, api.ConfigError) as err:  # another attempt or other code holds it
            _fail(err)
        if args.stage == "sweep":
            report, failures = result
            print(report.read_text(), flush=True)
            if failures:
                print(f"error: {cfg.run_path}: {len(failures)} run(s) failed or refused: {', '.join(failures)}",
                      file=sys.stderr, flush=True)
            status = max(status, api.exit_code(result))
            continue
        print(result.read_text() if isinstance(result, Path) else json.dumps(result, indent=2, default=str), flush=True)
    sys.exit(status)


if __name__ == "__main__":
    main()
