"""Several runs from one config: ``sweep.variants`` x ``sweep.seeds``, one table of mean +- std.

Each (variant, seed) is an ordinary run in ``RUN/<variant>-s<seed>/`` (sample -> train -> evaluate
the trained model), so each resumes on its own and can be inspected alone; the base model is
evaluated once in ``RUN/base/`` (greedy decoding does not depend on the seed). ``RUN/report.md``
holds accuracy per variant as mean +- std over seeds with intervals, paired differences vs the base
and vs SFT, every run's numbers, and the token efficiency table (``upft_ray.reporting.sweep_report``).
Baselines (``sample.method=sft|rft|label_filter``), the small reproduction and
ablations (``sample.prefix_tokens=4``, ``sample.structure_ratio=0.3``) are all variants.

A run directory records the config it belongs to (``sweep_run.json``, written before its first
stage): a rerun skips runs that finished with the same config, resumes unfinished ones, and refuses
(reports as failed, never as results) a directory holding another config's work.
"""

from __future__ import annotations

import logging
import traceback
from pathlib import Path

from upft_ray.analysis.collapse import measure_run_eos
from upft_ray.config import PipelineConfig, apply_overrides, config_from_dict, config_to_dict
from upft_ray.config.hashing import base_results_config, config_hash, results_config
from upft_ray.io.durable import remove_path, write_text_durably
from upft_ray.io.manifests import read_json, write_json_atomic
from upft_ray.orchestration.pipeline import evaluate_model, run_pipeline
from upft_ray.orchestration.sweep_records import keep_records, machines_section, restore_records
from upft_ray.reporting.sweep_report import build_sweep_report
from upft_ray.runtime.placement import with_resolved_resources
from upft_ray.runtime.ray_session import release_placement_groups
from upft_ray.training.stage import checkpoints_dir

log = logging.getLogger("upft.sweep")


def sweep_runs(cfg: PipelineConfig) -> list[tuple[str, int, PipelineConfig]]:
    """Return (variant, seed, config) for every run of the sweep, configs validated up front.

    Raises ValueError when the sweep has no variants; ConfigError if any variant's overrides are bad."""
    if not cfg.sweep.variants:
        raise ValueError("sweep.variants is empty: nothing to run (see configs/repro-small.yaml)")
    base = config_to_dict(cfg)
    base["sweep"] = {"seeds": [], "variants": []}
    runs = []
    # Seed-major: a sweep stopped part way has every variant for the seeds it finished.
    for seed in cfg.sweep.seeds or [cfg.seed]:
        for variant in cfg.sweep.variants:
            name = f"{variant['name']}-s{seed}"
            data = apply_overrides(base, [*variant.get("overrides", []), f"seed={seed}",
                                          f"run_dir={cfg.run_path / name}", "eval.evaluate_base=false"])
            runs.append((variant["name"], seed, config_from_dict(data, f"sweep variant {variant['name']}")))
    return runs


RECORD = "sweep_run.json"


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Return 'key (old -> new)' for every leaf that differs between two config dicts."""
    out = []
    for key in sorted(old.keys() | new.keys()):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key} ({a!r} -> {b!r})")
    return out


def run_state(run_dir: Path, results: dict, metrics: Path) -> tuple[str, str | None]:
    """Return ("done" | "todo" | "stale", why) for a sweep run directory and the results config it should hold.

    "done": its record names the same config and ``metrics`` (the last file its evaluation writes)
    exists. "stale": it holds results of another config, or results with no record (made by hand or
    by an older version), which cannot be told apart; it is refused, never reported or reused."""
    record = run_dir / RECORD
    wanted = config_hash(results)
    if record.is_file():
        stored = read_json(record)
        if stored.get("config_hash") != wanted:
            changed = _differences(stored.get("config", {}), results)
            return "stale", (f"{run_dir} holds results of another config (hash {stored.get('config_hash')}, now "
                             f"{wanted}; differs in: {', '.join(changed) or 'unknown'}); delete that directory to "
                             "redo it, or use another run_dir")
        return ("done" if metrics.is_file() else "todo"), None
    if any((run_dir / sub).exists() for sub in ("sample", "train", "eval", "eval_base")):
        return "stale", (f"{run_dir} holds results without a sweep record ({RECORD}): which config made them "
                         "cannot be checked; delete that directory to redo it, or use another run_dir")
    return "todo", None


def claim_run(run_dir: Path, results: dict) -> None:
    """Record which config owns ``run_dir`` (before any of its stages runs, so a resume is checked too)."""
    write_json_atomic(run_dir / RECORD, {"config_hash": config_hash(results), "config": results})


def plan_sweep(cfg: PipelineConfig):
    """Return (runs, their states, the base's state) without starting anything."""
    runs = sweep_runs(cfg)
    states = {f"{v}-s{s}": run_state(c.run_path, results_config(c), c.run_path / "eval" / "metrics.json")
              for v, s, c in runs}
    base_dir = cfg.run_path / "base"
    base = run_state(base_dir, base_results_config(cfg), base_dir / "eval_base" / "metrics.json")
    return runs, states, base


def sweep_report(cfg: PipelineConfig, failures: dict[str, str]) -> str:
    """Return RUN/report.md for a sweep from the runs that are done with the current config."""
    runs, states, base = plan_sweep(cfg)
    failures = dict(failures)
    failures.update({name: why for name, (state, why) in states.items() if state == "stale" and name not in failures})
    if base[0] == "stale":
        failures.setdefault("base", base[1])
    reported = [(v, s, c.run_path) for v, s, c in runs
                if states[f"{v}-s{s}"][0] == "done" and f"{v}-s{s}" not in failures]
    planned = {v["name"]: (next(c.sample.method for x, _, c in runs if x == v["name"]),
                           sum(1 for x, *_ in runs if x == v["name"])) for v in cfg.sweep.variants}
    fresh = [c.run_path for v, s, c in runs if states[f"{v}-s{s}"][0] != "stale"]
    report = build_sweep_report(cfg.run_path.name, cfg.model, cfg.sweep.seeds or [cfg.seed],
                                cfg.run_path / "base" if base[0] == "done" else None, reported, planned, failures,
                                fresh)
    made = ([cfg.run_path / "base"] if base[0] == "done" else []) + [d for *_, d in reported]
    return report + "".join(line + "\n" for line in machines_section(made))


def prune_checkpoints(run_cfg: PipelineConfig) -> int:
    """Delete a finished run's training checkpoints (``RUN/train/ray``: weights and optimizer states, kept for
    resuming a crashed training); its exported weights (``train/final``) and every record stay. A 30-run sweep
    of the 135M model otherwise holds ~63 GB of them. Return the bytes freed."""
    ray_dir = checkpoints_dir(run_cfg)
    if not ray_dir.is_dir():
        return 0
    freed = sum(f.stat().st_size for f in ray_dir.rglob("*") if f.is_file())
    remove_path(ray_dir)
    log.info("%s: training checkpoints deleted (%.1f GiB; sweep.keep_checkpoints=true keeps them)",
             run_cfg.run_path.name, freed / 2**30)
    return freed


def keep_run(cfg: PipelineConfig, run_cfg: PipelineConfig) -> None:
    """Keep a finished run's records in ``sweep.records_dir`` (when set), with its own P(EOS) after t measured
    first, while its weights are at hand (the collapse analysis reads it once they are gone). A failure here
    is logged, not raised: the run itself is finished, and the next sweep keeps what is missing."""
    if not cfg.sweep.records_dir:
        return
    try:
        if (run_cfg.run_path / "train").is_dir():
            measure_run_eos(run_cfg.run_path, run_cfg.sample.prefix_tokens, run_cfg.sample.task_template,
                            run_cfg.sample.system_prompt, chat_template=run_cfg.eval.engine.chat_template)
        keep_records(run_cfg.run_path, records_path(cfg))
    except Exception as err:  # noqa: BLE001 -- the run is done; its records are kept by the next sweep
        log.warning("%s: records not kept in %s (%s: %s); the next sweep keeps them", run_cfg.run_path.name,
                    records_path(cfg), type(err).__name__, err)


def base_config(cfg: PipelineConfig) -> PipelineConfig:
    """Return the sweep's config for its base evaluation, in ``RUN/base``."""
    return cfg.model_copy(update={"run_dir": str(cfg.run_path / "base")})


def records_path(cfg: PipelineConfig) -> Path:
    """Return ``sweep.records_dir`` as an absolute path (relative to the working directory, as run_dir)."""
    return Path(cfg.sweep.records_dir).expanduser().resolve()


def restore_kept_runs(cfg: PipelineConfig) -> list[str]:
    """Restore the sweep's finished runs whose directories are missing from ``sweep.records_dir`` (when set), and
    keep the records of runs done with this config and not kept yet (a records_dir set part way; never a run
    of another config, whose records a fresh machine would restore only to refuse); return the runs restored."""
    if not cfg.sweep.records_dir:
        return []
    restored = restore_records([c.run_path for *_, c in sweep_runs(cfg)] + [cfg.run_path / "base"],
                               records_path(cfg))
    runs, states, (base_state, _) = plan_sweep(cfg)
    done = [c for v, s, c in runs if states[f"{v}-s{s}"][0] == "done"]
    for run_cfg in done + ([base_config(cfg)] if base_state == "done" else []):
        if not (records_path(cfg) / run_cfg.run_path.name).is_dir():
            keep_run(cfg, run_cfg)
    return restored


def _run_one(cfg: PipelineConfig, run_cfg: PipelineConfig) -> None:
    """Run one variant-seed of the sweep through the pipeline (Ray is up), keep its records, then drop its
    checkpoints."""
    claim_run(run_cfg.run_path, results_config(run_cfg))
    run_cfg = with_resolved_resources(run_cfg)
    run_pipeline(run_cfg)
    keep_run(cfg, run_cfg)
    if not cfg.sweep.keep_checkpoints:
        prune_checkpoints(run_cfg)


def run_sweep(cfg: PipelineConfig) -> tuple[Path, dict[str, str]]:
    """Run every (variant, seed) of the sweep (Ray is up), then write ``RUN/report.md``; return it and the
    failed or refused runs ({run: why}). Each run goes through the pipeline's own stages; a failed run is
    reported and the others go on; a run directory holding another config's results is refused."""
    restore_kept_runs(cfg)
    runs, states, (base_state, base_why) = plan_sweep(cfg)
    failures = {name: why for name, (state, why) in states.items() if state == "stale"}
    if cfg.eval.evaluate_base and base_state == "stale":
        failures["base"] = base_why
    todo = [(v, s, c) for v, s, c in runs if states[f"{v}-s{s}"][0] == "todo"]
    for i, (variant, seed, _) in enumerate(runs, 1):
        name = f"{variant}-s{seed}"
        if name in failures or states[name][0] == "done":
            log.info("%d/%d %s: %s", i, len(runs), name, "refused: " + failures[name] if name in failures
                     else "done already")
    if cfg.eval.evaluate_base and base_state == "todo":
        base_cfg = base_config(cfg)
        claim_run(base_cfg.run_path, base_results_config(cfg))
        evaluate_model(base_cfg, "base")
        keep_run(cfg, base_cfg)
    for i, (variant, seed, run_cfg) in enumerate(todo, 1):
        name = f"{variant}-s{seed}"
        log.info("%d/%d to run: %s: %s", i, len(todo), name, run_cfg.run_path)
        try:
            _run_one(cfg, run_cfg)
        except Exception as err:  # noqa: BLE001 -- one failed run must not cost the others
            failures[name] = f"{type(err).__name__}: {err}"
            log.error("%s failed:\n%s", name, traceback.format_exc())
            released = release_placement_groups()
            if released:
                log.warning("%s left %d placement group(s) holding resources behind: removed, so the next run "
                            "can be scheduled", name, released)
    report = cfg.run_path / "report.md"
    write_text_durably(report, sweep_report(cfg, failures))
    return report, failures
