"""Several runs from one config: ``sweep.variants`` x ``sweep.seeds``, one table of mean +- std.

Each (variant, seed) is an ordinary run in ``RUN/<variant>-s<seed>/`` (sample -> train -> evaluate
the trained model), so each resumes on its own and can be inspected alone; the base model is
evaluated once in ``RUN/base/`` (greedy decoding does not depend on the seed). ``RUN/report.md``
holds accuracy per variant as mean +- std over seeds, every run's numbers, and the token
efficiency table. Baselines (``sample.method=sft|rft|label_filter``), the small reproduction and
ablations (``sample.prefix_tokens=4``, ``sample.structure_ratio=0.3``) are all variants.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import traceback
from pathlib import Path

from upft_ray.config import PipelineConfig, apply_overrides, config_from_dict, config_to_dict
from upft_ray.efficiency import METHOD_LABELS, efficiency_table


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


def _accuracies(run_dir: Path, sub: str) -> dict[str, float]:
    path = run_dir / sub / "metrics.json"
    if not path.is_file():
        return {}
    return {b: 100 * m["accuracy"] for b, m in json.loads(path.read_text())["benchmarks"].items()}


def _mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} +- {statistics.stdev(values):.1f}"


def sweep_report(cfg: PipelineConfig, failures: dict[str, str]) -> str:
    """Return RUN/report.md for a sweep: mean +- std per variant, every run, token efficiency, failures."""
    runs = sweep_runs(cfg)
    base = _accuracies(cfg.run_path / "base", "eval_base")
    per_run = {f"{v}-s{s}": _accuracies(c.run_path, "eval") for v, s, c in runs}
    names = sorted({b for accs in [base, *per_run.values()] for b in accs})
    seeds = cfg.sweep.seeds or [cfg.seed]
    header = "| variant | method | " + " | ".join(names) + " | avg |"
    rule = "|---|---|" + "---|" * (len(names) + 1)
    lines = [f"# Sweep: {cfg.run_path.name}", "", f"Model `{cfg.model}`; seeds {seeds}; accuracy in % (greedy), "
             "mean +- sample std over seeds; a variant's runs are in `<variant>-s<seed>/`.", "", header, rule]
    if base:
        lines.append("| base | - | " + " | ".join(_mean_std([base[n]] if n in base else []) for n in names)
                     + f" | {_mean_std([statistics.mean(base.values())])} |")
    for variant in cfg.sweep.variants:
        mine = [(c, per_run[f"{v}-s{s}"]) for v, s, c in runs if v == variant["name"]]
        done = [accs for _, accs in mine if accs]
        cells = [_mean_std([a[n] for a in done if n in a]) for n in names]
        avgs = [statistics.mean(a.values()) for a in done]
        method = METHOD_LABELS.get(mine[0][0].sample.method, mine[0][0].sample.method)
        lines.append(f"| {variant['name']} ({len(done)}/{len(mine)} runs) | {method} | " + " | ".join(cells)
                     + f" | {_mean_std(avgs)} |")
    lines += ["", "## Every run", "", "| run | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for run, accs in per_run.items():
        lines.append(f"| {run} | " + " | ".join(f"{accs[n]:.1f}" if n in accs else "-" for n in names) + " |")
    efficiency = efficiency_table([c.run_path for _, _, c in runs])
    if efficiency:
        lines += ["", "## Token efficiency (means over seeds)", "", efficiency.rstrip()]
    if failures:
        lines += ["", "## Failed runs", ""] + [f"- `{run}`: {why}" for run, why in failures.items()]
    return "\n".join(lines) + "\n"


def run_sweep(cfg: PipelineConfig) -> tuple[Path, dict[str, str]]:
    """Run every (variant, seed) of the sweep on Ray, then write ``RUN/report.md``; return it and the
    failed runs ({run: error}). A failed run is reported and the others go on."""
    from upft_ray.evaluation.evaluator import run_evaluate
    from upft_ray.models import resolve_model
    from upft_ray.pipeline import check_inputs, trained_model_dir
    from upft_ray.placement import with_resolved_resources
    from upft_ray.ray_runtime import ray_session
    from upft_ray.sampling.sampler import run_sample
    from upft_ray.training.trainer import run_train

    runs = sweep_runs(cfg)
    check_inputs(cfg, ("sample", "evaluate"))
    failures: dict[str, str] = {}
    with ray_session(cfg.ray):
        cfg = with_resolved_resources(cfg)  # `auto` counts, from the GPUs Ray sees
        runs = [(variant, seed, with_resolved_resources(run_cfg)) for variant, seed, run_cfg in runs]
        if cfg.eval.evaluate_base and not (cfg.run_path / "base" / "eval_base" / "metrics.json").is_file():
            base_cfg = dataclasses.replace(cfg, run_dir=str(cfg.run_path / "base"))
            run_evaluate(base_cfg, resolve_model(cfg.model), base_cfg.run_path / "eval_base", "base")
        for i, (variant, seed, run_cfg) in enumerate(runs, 1):
            name = f"{variant}-s{seed}"
            if (run_cfg.run_path / "eval" / "metrics.json").is_file():
                print(f"[sweep] {i}/{len(runs)} {name}: done already")
                continue
            print(f"[sweep] {i}/{len(runs)} {name}: {run_cfg.run_path}", flush=True)
            try:
                run_sample(run_cfg)
                run_train(run_cfg)
                run_evaluate(run_cfg, str(trained_model_dir(run_cfg)), run_cfg.run_path / "eval", "trained")
            except Exception as err:  # one failed run must not cost the others
                failures[name] = f"{type(err).__name__}: {err}"
                print(f"[sweep] {name} failed:\n{traceback.format_exc()}", flush=True)
    report = cfg.run_path / "report.md"
    report.write_text(sweep_report(cfg, failures))
    return report, failures
