"""Ray job entry point: the same library calls as `upft`, on the cluster the job was submitted to.

    ray job submit --working-dir . -- python jobs/upft_pipeline.py --config configs/quickstart.yaml \
        [--stage run|sample|train|evaluate] [key=value ...]
"""

import argparse

from upft_ray import pipeline
from upft_ray.config import load_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="pipeline YAML")
    parser.add_argument("--stage", default="run", choices=["run", "sample", "train", "evaluate"])
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    args = parser.parse_args()
    # A submitted job joins the cluster it runs on rather than starting a private Ray.
    cfg = load_config(args.config, ["ray.address=auto", *args.overrides])
    result = getattr(pipeline, args.stage)(cfg)
    print(result.read_text() if args.stage == "run" else result)


if __name__ == "__main__":
    main()
