"""The quickstart's recorded result: one finished run read into ``bench/results/quickstart_results.json``, and
the README table rendered from that file (never typed by hand).

``bench/quickstart_record.py`` runs the quickstart and writes both; ``tests/test_readme_quickstart.py``
fails when the README's table is not the rendering of the file, or when the file was recorded with
another quickstart config than the one shipped.
"""

from __future__ import annotations

import json
from pathlib import Path

from doc_blocks import find_block, markers, replace_block

from upft_ray.orchestration.sweep_records import precision_in
from upft_ray.reporting.comparisons import accuracy_cell, paired
from upft_ray.reporting.paper_recipe import recipe_deviations

BEGIN, END = markers("quickstart-results", "bench/quickstart_record.py")


def _read(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the quickstart run is not finished")
    return json.loads(path.read_text())


def collect(run_dir: Path, config_hash: str, command: str, machine: dict, total_s: float | None = None) -> dict:
    """Return the recorded result of the finished quickstart run in ``run_dir``: per benchmark the base
    and the tuned model's counts and the paired comparison, the recipe's deviations from the paper,
    tokens, stage times (``total_s``: the whole command's, start-up included, where it was timed), and
    where the figures come from (``config_hash``, ``command``, ``machine``).

    Raises FileNotFoundError naming a stage file that is missing, ValueError when the two models share
    no benchmark."""
    sample, train = _read(run_dir / "sample" / "manifest.json"), _read(run_dir / "train" / "manifest.json")
    base, tuned = _read(run_dir / "eval_base" / "metrics.json"), _read(run_dir / "eval" / "metrics.json")
    benchmarks = {}
    for name in sorted(base["benchmarks"].keys() & tuned["benchmarks"].keys()):
        result = paired(run_dir / "eval", run_dir / "eval_base", name)
        if isinstance(result, str):
            raise ValueError(f"{name}: {result}")
        benchmarks[name] = {
            "base": {k: base["benchmarks"][name][k] for k in ("correct", "graded")},
            "upft": {k: tuned["benchmarks"][name][k] for k in ("correct", "graded")},
            "paired": result.paired, "difference_pts": round(100 * result.difference, 2),
            "interval_pts": [round(100 * result.lower, 2), round(100 * result.upper, 2)],
            "p_value": result.p_value, "verdict": result.verdict}
    if not benchmarks:
        raise ValueError(f"{run_dir}: the base and the tuned model share no benchmark")
    stages = {"sample": sample["config"], "train": train["config"], "sampling": sample.get("sampling_params", {})}
    return {"command": command, "config_hash": config_hash, "machine": machine,
            "recipe": {"t": sample["config"]["prefix_tokens"], "p": sample["config"]["structure_ratio"],
                       "learning_rate": train["config"]["learning_rate"], "epochs": train["config"]["epochs"],
                       "deviations": [list(d) for d in recipe_deviations(stages)]},
            "tokens": {"sampled": sample["tokens"]["generated"], "tuned": train["counts"]["tokens_tuned"]},
            "precision": {stage: precision_in(record, content) for stage, record, content in (
                ("sample", "sample/manifest.json", sample), ("train", "train/manifest.json", train),
                ("eval base", "eval_base/metrics.json", base), ("eval UPFT", "eval/metrics.json", tuned))},
            "wall_time_s": {"sample": round(sample["wall_time_s"], 1), "train": round(train["wall_time_s"], 1),
                            "eval base": round(base["wall_time_s"], 1), "eval UPFT": round(tuned["wall_time_s"], 1),
                            **({"total": round(total_s, 1)} if total_s is not None else {})},
            "max_progress_gap_s": {name: m.get("faults", {}).get("max_progress_gap_s") for name, m in
                                   (("sample", sample), ("eval base", base), ("eval UPFT", tuned))},
            "benchmarks": benchmarks}


def count_output(log: Path) -> dict:
    """Return how many lines a captured console output ``log`` holds (newlines: a progress bar redrawn with
    carriage returns is one line on a terminal), how many follow the set-up, and how many are our
    ``[stage]`` lines."""
    lines = log.read_bytes().decode(errors="replace").removesuffix("\n").split("\n")  # no newline translation
    ready = next((i for i, line in enumerate(lines) if line.startswith("[setup] ready")), -1)
    return {"lines": len(lines), "after_setup": len(lines) - ready - 1,  # set-up prints more on a fresh .venv
            "stage_lines": sum(line.startswith("[") and "] " in line[:20] for line in lines)}


def _accuracy(counts: dict) -> str:
    return accuracy_cell({**counts, "accuracy": counts["correct"] / counts["graded"]})


def _precision(results: dict) -> str:
    """Return the sentence saying what precision each stage ran in ('' for a record made before it was kept)."""
    kept = results.get("precision", {})
    if not any(kept.values()):
        return ""
    bf16 = results["machine"].get("cpu_native_bf16")
    where = "" if bf16 is None else f"; this CPU {'has' if bf16 else 'lacks'} native bf16"
    return (" Precision (what `auto` became here" + where + "): "
            + ", ".join(f"{stage} {p or 'not recorded'}" for stage, p in kept.items()) + ".")


def render_block(results: dict) -> str:
    """Return the README's quickstart block (between BEGIN and END, markers included) for ``results``."""
    recipe = results["recipe"]
    deviations = recipe["deviations"]
    label = ("UPFT, the paper's recipe" if not deviations else
             "UPFT with " + ", ".join(f"`{field}={ours}`" for field, ours, *_ in deviations))
    lines = [BEGIN, "",
             f"Recorded {results['machine']['date_utc']} UTC on {results['machine']['cpu']} "
             f"x{results['machine']['cpu_count']} by `{results['command']}` into `bench/results/quickstart_results.json` "
             f"(config hash `{results['config_hash']}`"
             + (f"; the same run recorded again {results['recorded_again_utc']} UTC with `--reuse`"
                if "recorded_again_utc" in results else "") + f"). Model trained: {label}; t = {recipe['t']}, "
             f"p = {recipe['p']}, lr {recipe['learning_rate']:g}, {recipe['epochs']} epoch(s)." + _precision(results),
             "",
             "| benchmark | base | " + label.split(" with ")[0] + " | difference (pts) [95% CI] | p (McNemar) | verdict |",
             "|---|---|---|---|---|---|"]
    for name, b in results["benchmarks"].items():
        lo, hi = b["interval_pts"]
        lines.append(f"| {name} | {_accuracy(b['base'])} | {_accuracy(b['upft'])} | {b['difference_pts']:+.1f} "
                     f"[{lo:+.1f}, {hi:+.1f}] | {b['p_value']:.3g} | {b['verdict']} |")
    times = ", ".join(f"{k} {v:.0f} s" for k, v in results["wall_time_s"].items())
    lines += ["", f"Tokens sampled {results['tokens']['sampled']:,}, tuned {results['tokens']['tuned']:,}; "
              f"wall time: {times}."]
    if "output" in results:
        out, before = results["output"], results.get("output_before")
        was = (f" (before the package re-layout, commit {before['commit']}: {before['lines']:,} lines, "
               f"{before['after_setup']:,} after set-up)" if before else "")
        lines += ["", f"Console output of `{out['command']}`: {out['lines']:,} lines, {out['after_setup']:,} after "
                      f"set-up{was}."]
    if deviations:
        restore = " ".join(d[3] for d in deviations)
        away = "one override away" if len(deviations) == 1 else f"{len(deviations)} overrides away"
        lines += ["", f"The paper's setting (every ingredient of the official recipe; README, \"Paper fidelity\") is "
                      f"{away}: `upft run -c configs/quickstart.yaml {restore}`."]
    return "\n".join(lines + ["", END])


def readme_block(text: str, where: str = "README.md") -> str:
    """Return the quickstart block of README ``text`` (markers included); ValueError naming ``where``
    when its markers are missing, doubled or out of order."""
    return find_block(text, BEGIN, END, where)


def update_readme(path: Path, results: dict) -> bool:
    """Replace the quickstart block in ``path`` with the rendering of ``results``; return whether it changed."""
    return replace_block(path, BEGIN, END, render_block(results))
