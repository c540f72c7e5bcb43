"""Print, or check, the run hashes of the default config, of every shipped config and of each sweep run.

    .venv/bin/python scripts/run_hashes.py            # print them (JSON)
    .venv/bin/python scripts/run_hashes.py --check    # compare with tests/config/run_hashes.json

A run hash decides whether a committed stage is reused or refused (``upft_ray.config.hashing``), so a
change that moves one silently invalidates, or wrongly reuses, every run directory made before it.
``tests/config/run_hashes.json`` was written before the package re-layout (commit d63f4b1, the old
modules ``upft_ray.schema``/``upft_ray.sweep``); ``--check`` proves the re-layout and every later
change kept them. Change that file only with a change that means to move the hashes, and say so: the
``jobs/configs/`` entries were rewritten on 2026-12-06, when the paper job configs moved to prepared data
files, the official chat templates and ``train.epoch_tail: carry`` (no run of them existed). On 2026-12-07
every ``train`` hash moved on purpose: the operational settings (checkpoint cadence, failure budget, ...) left
the train hash; the hash before that is ``train_legacy``, which must stay: a train directory claimed under it
is still its config's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BASELINE = REPO / "tests" / "config" / "run_hashes.json"


def run_hashes() -> dict[str, dict[str, str]]:
    """Return {config name (and sweep run): {stage: hash}} for the defaults and every shipped YAML config."""
    sys.path.insert(0, str(REPO))
    from upft_ray.config import load_config
    from upft_ray.config.hashing import (
        base_results_config,
        config_hash,
        results_config,
        sample_config_hash,
        train_config_hashes,
    )
    from upft_ray.orchestration.sweep import sweep_runs

    def hashes(cfg) -> dict[str, str]:
        sample = sample_config_hash(cfg)
        train, train_legacy = train_config_hashes(cfg, sample)
        return {"sample": sample, "train": train, "train_legacy": train_legacy,
                "results": config_hash(results_config(cfg)), "base_results": config_hash(base_results_config(cfg))}

    out = {"defaults": hashes(load_config(None, ["run_dir=runs/x"]))}
    for path in sorted([*REPO.glob("configs/*.yaml"), *REPO.glob("jobs/configs/*.yaml")]):
        name = str(path.relative_to(REPO))
        cfg = load_config(path, ["run_dir=runs/x"])
        out[name] = hashes(cfg)
        for variant, seed, run_cfg in sweep_runs(cfg) if cfg.sweep.variants else []:
            out[f"{name} :: {variant}-s{seed}"] = hashes(run_cfg)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help=f"compare with {BASELINE.relative_to(REPO)}")
    args = parser.parse_args()
    now = run_hashes()
    if not args.check:
        print(json.dumps(now, indent=1, sort_keys=True))
        return 0
    baseline = json.loads(BASELINE.read_text())
    moved = {(name, stage): f"{baseline[name][stage]} -> {now[name].get(stage)}"
             for name in sorted(set(baseline) & set(now)) for stage in baseline[name]
             if baseline[name][stage] != now[name].get(stage)}
    missing, new = sorted(set(baseline) - set(now)), sorted(set(now) - set(baseline))
    for (name, stage), change in moved.items():
        print(f"moved: {name} {stage}: {change}")
    kept = len(baseline) - len(missing) - len({name for name, _ in moved})
    print(f"{kept} of {len(baseline)} configs kept their run hashes; {len(moved)} hashes moved, "
          f"configs gone {missing}, new {new}")
    return 1 if moved or missing else 0


if __name__ == "__main__":
    sys.exit(main())
