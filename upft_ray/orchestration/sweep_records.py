"""A sweep's records that outlive its machine: each finished run's small files, kept apart from its weights.

A sweep of a 0.5B model runs for hours; the machine (a pod, a laptop, a CI box) may not last that long,
and a run directory holds gigabytes of weights nobody needs once the run is evaluated. With
``sweep.records_dir`` set, the sweep copies each finished run's *records* (the files its report, the
paired tests, the token table and the collapse analysis read: RECORD_FILES, a few hundred KB per run)
to ``records_dir/<run>/``, and a later sweep on a fresh machine, finding a run's directory missing, restores
it from there and counts it done (its config hash is checked as for any run directory; records of another
config are refused, never reported). What is not kept cannot be redone from the records: the weights
(``train/final``), the sampled shards, the training checkpoints.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from upft_ray.io.durable import commit_dir, remove_path, staging_for
from upft_ray.io.manifests import read_json, write_json_atomic
from upft_ray.runtime.hardware import machine_facts

log = logging.getLogger("upft.sweep")

MACHINE = "machine.json"  # the machine a run was made on (CPU, count, OS, packages): written when it is kept
# Relative to a run directory; ``*`` matches within one directory. ``analysis/eos_*`` is the run's own
# P(EOS) after t (upft_ray.analysis.collapse), measured while its weights were at hand.
RECORD_FILES = ("sweep_run.json", "run.json", "machine.json", "sample/manifest.json", "train/manifest.json",
                "eval/metrics.json", "eval/*.parquet", "eval_base/metrics.json", "eval_base/*.parquet",
                "analysis/eos_*.parquet")


def record_files(run_dir: Path) -> list[Path]:
    """Return the record files present in ``run_dir``, relative to it, sorted."""
    return sorted({p.relative_to(run_dir) for pattern in RECORD_FILES for p in run_dir.glob(pattern) if p.is_file()})


def _copy_tree(source: Path, files: list[Path], target: Path) -> None:
    """Copy ``files`` (relative to ``source``) into a staging directory and commit it as ``target``
    (replacing what is there): a reader sees all of the records or none of them."""
    staging = staging_for(target)
    for rel in files:
        (staging / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / rel, staging / rel)
    if target.exists():
        remove_path(target)
    commit_dir(staging, target)


def keep_records(run_dir: Path, records_dir: Path) -> Path:
    """Copy the finished run ``run_dir``'s records to ``records_dir/<run name>/``; return that directory.

    Raises FileNotFoundError when ``run_dir`` has no finished evaluation (nothing worth keeping)."""
    if not any((run_dir / sub / "metrics.json").is_file() for sub in ("eval", "eval_base")):
        raise FileNotFoundError(f"{run_dir}: no finished evaluation (eval/metrics.json) to keep")
    if not (run_dir / MACHINE).is_file():  # kept by the driver that ran it, on the machine it ran on
        write_json_atomic(run_dir / MACHINE, machine_facts())
    files = record_files(run_dir)
    kept = records_dir / run_dir.name
    _copy_tree(run_dir, files, kept)
    size = sum((kept / f).stat().st_size for f in files)
    log.info("%s: records kept in %s (%d files, %.0f KB)", run_dir.name, kept, len(files), size / 1024)
    return kept


def restore_records(run_dirs: list[Path], records_dir: Path) -> list[str]:
    """Restore every run of ``run_dirs`` whose directory is missing and whose records are in ``records_dir``;
    return the names restored. A run directory that exists, even half done, is never touched."""
    restored = []
    for run_dir in run_dirs:
        kept = records_dir / run_dir.name
        if run_dir.exists() or not (kept / "sweep_run.json").is_file():
            continue
        _copy_tree(kept, record_files(kept), run_dir)
        restored.append(run_dir.name)
    if restored:
        log.info("restored %d finished run(s) from %s: %s (their weights were not kept)", len(restored),
                 records_dir, ", ".join(restored))
    return restored


def _bf16_note(facts: dict) -> str:
    """Return what ``auto`` precision and dtype chose on a run's machine (its ``facts``): bf16 where the CPU
    multiplies bf16 natively, else fp32; "" where the facts do not say (runs kept before it was recorded)."""
    native = facts.get("cpu_native_bf16")
    return "" if native is None else (", native bf16: auto = bf16" if native else ", no native bf16: auto = fp32")


def _engine_dtypes(record: dict) -> str:
    return ", ".join(record.get("engine_dtypes") or [])


def _trained_precision(record: dict) -> str:
    return (record.get("trained_with") or {}).get("precision") or ""


# stage record -> (report word, how to read the precision it says its stage ran in), in report order
_PRECISIONS = {"sample/manifest.json": ("sampled", _engine_dtypes),
               "train/manifest.json": ("trained", _trained_precision),
               "eval/metrics.json": ("evaluated", _engine_dtypes),
               "eval_base/metrics.json": ("evaluated", _engine_dtypes)}


def precision_in(record: str, content: dict) -> str:
    """Return the precision the stage record ``record`` (a path relative to its run, e.g. "train/manifest.json")
    with ``content`` says its stage ran in, "" where it says none: the vLLM engines' dtypes (sample, eval),
    ``trained_with.precision`` (train)."""
    return _PRECISIONS[record][1](content)


def ran_in(run_dir: Path) -> str:
    """Return what precision each stage of the run in ``run_dir`` ran in, from its records ("sampled bfloat16,
    trained bf16, evaluated bfloat16"); "not recorded" where none says (runs made before it was recorded)."""
    said = {record: precision_in(record, read_json(run_dir / record)) for record in _PRECISIONS
            if (run_dir / record).is_file()}
    if not any(said.values()):
        return "not recorded"
    return ", ".join(f"{_PRECISIONS[record][0]} {precision or 'not recorded'}" for record, precision in said.items())


def machines_section(run_dirs: list[Path]) -> list[str]:
    """Return the report lines saying which CPUs the runs were made on (their ``machine.json``; none: []) and
    what precision their stages ran in (``ran_in``), with a warning when there was more than one kind of CPU:
    greedy decoding on CPU is not bit-identical across CPU models, so a paired difference between runs of two
    machines includes that noise."""
    by_cpu: dict[str, list[str]] = {}
    for run_dir in run_dirs:
        facts = read_json(run_dir / MACHINE) if (run_dir / MACHINE).is_file() else None
        cpu = f"{facts['cpu']} x{facts['cpu_count']}{_bf16_note(facts)}" if facts else "not recorded"
        by_cpu.setdefault(cpu, []).append(run_dir.name)
    if set(by_cpu) <= {"not recorded"}:
        return []
    by_precision: dict[str, list[str]] = {}
    for run_dir in run_dirs:
        by_precision.setdefault(ran_in(run_dir), []).append(run_dir.name)
    lines = ["", "## Machines", "", *[f"- {cpu}: {', '.join(names)}" for cpu, names in by_cpu.items()],
             "", "Precision (what each stage ran in; `auto` is bf16 only where the hardware is fast at it):", "",
             *[f"- {ran}: {', '.join(names)}" for ran, names in by_precision.items()]]
    if len(by_cpu) > 1:
        lines += ["", "The runs were made on more than one kind of machine: greedy decoding on CPU is not "
                  "bit-identical across CPU models, so differences between runs of different machines include "
                  "that noise (compare within one machine where it matters)."]
    return lines
