"""Checks made before Ray starts, so a run that cannot work fails in a second with one line per
problem, not 30-90 s in with a traceback from a worker: the model resolves (a hub id is cached or
reachable), the run directory can be created and written, and the question files open and hold
the question column. Nothing here writes anything that outlives the check.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from upft_ray.config import ConfigError, PipelineConfig
from upft_ray.config.columns import Columns
from upft_ray.config.model_refs import BUNDLED_MODELS, is_checkpoint_dir, model_problem
from upft_ray.engine.models import locate_parts, prepared_path
from upft_ray.evaluation.benchmarks import load_benchmark
from upft_ray.io.records import Unreadable
from upft_ray.io.sources import check_readable, list_source_files, scan_records

_PROBED_FILES = 32  # files opened per source (a glob over thousands on an object store stays quick)
_HUB_TIMEOUT_S = 10.0
_SCANNED_BYTES = 4 << 20  # a JSONL source this small is read whole, to find a wrong question field now


def _one_line(err: BaseException) -> str:
    text = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    return " ".join(str(text).split())


def model_resolution_problem(model: str) -> str | None:
    """Return why ``model`` cannot be loaded by the workers, or None.

    A bundled model needs its package (it is converted on first use); a directory must be an HF
    checkpoint; a hub id must be in the local HF cache or, unless HF_HUB_OFFLINE is set, answer a
    metadata request within a few seconds (vLLM would otherwise retry for minutes, on a worker)."""
    if problem := model_problem(model):
        return problem
    if model in BUNDLED_MODELS:
        if is_checkpoint_dir(prepared_path(model)):
            return None
        try:
            locate_parts(BUNDLED_MODELS[model])
        except FileNotFoundError as err:
            return _one_line(err)
        return None
    if Path(model).expanduser().exists():
        return None  # model_problem found a checkpoint there
    return _hub_problem(model)


def _hub_problem(repo_id: str) -> str | None:
    from huggingface_hub import (  # heavy: loaded when used
        constants,
        get_hf_file_metadata,
        hf_hub_url,
        try_to_load_from_cache,
    )

    if isinstance(try_to_load_from_cache(repo_id, "config.json"), str):
        return None
    where = f"hub id {repo_id!r} is not in the local HF cache ({constants.HF_HUB_CACHE})"
    # read the environment now: huggingface_hub's constants were fixed when it was first imported
    offline = constants.HF_HUB_OFFLINE or any(os.environ.get(v, "").upper() in {"1", "ON", "YES", "TRUE"}
                                              for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    if offline:
        return f"{where} and HF_HUB_OFFLINE is set; download it first or give a local checkpoint directory"
    try:
        url = hf_hub_url(repo_id, "config.json", endpoint=os.environ.get("HF_ENDPOINT") or None)
        get_hf_file_metadata(url, timeout=_HUB_TIMEOUT_S)
    except Exception as err:  # noqa: BLE001 - no network, not found, gated: each means the workers cannot load it
        return f"{where} and cannot be fetched ({type(err).__name__}: {_one_line(err)[:200]})"
    return None


def run_dir_problem(run_dir: str) -> str | None:
    """Return why ``run_dir`` cannot be created or written, or None. Leaves nothing behind."""
    try:
        return _run_dir_problem(Path(run_dir).expanduser().resolve())
    except (OSError, ValueError, RuntimeError) as err:  # a name too long, a NUL, a ~user that does not exist
        return f"{run_dir[:200]!r} is not a usable path ({_one_line(err)})"


def _run_dir_problem(run_path: Path) -> str | None:
    if run_path.exists() and not run_path.is_dir():
        return f"{run_path} is a file, not a directory"
    existing = run_path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return f"{run_path} cannot be created: {existing} is a file"
    try:  # try it: os.access says yes to root even on read-only file systems
        os.rmdir(tempfile.mkdtemp(prefix=".upft-write-check-", dir=existing))
    except OSError as err:
        verb = "written" if existing == run_path else f"created (in {existing})"
        return f"{run_path} cannot be {verb}: {err.strerror or err}"
    return None


def source_problems(source: str, columns: Columns) -> list[str]:
    """Return why the files of question source ``source`` cannot be read (one line each), or []."""
    try:
        files = list_source_files(source)
    except (FileNotFoundError, ValueError, KeyError) as err:  # these name the path and what is wrong
        return [_one_line(err)]
    except Exception as err:  # noqa: BLE001 - an odd path (too long, a NUL): say so, do not crash
        return [f"{source[:200]!r} cannot be listed ({type(err).__name__}: {_one_line(err)})"]
    problems, any_records = [], len(files) > _PROBED_FILES
    for file in files[:_PROBED_FILES]:
        try:
            any_records = check_readable(file, columns) or any_records
        except ValueError as err:
            problems.append(_one_line(err))
        except Exception as err:  # noqa: BLE001 - any failure to open is the run's failure too
            problems.append(f"cannot read {file.uri} ({type(err).__name__}: {_one_line(err)})")
    if not problems and not any_records:
        problems.append(f"{source} holds no records (empty file{'s' if len(files) > 1 else ''})")
    elif not problems and (why := _question_field_problem(files, columns)):
        problems.append(f"{source}: {why}")
    return problems


def _question_field_problem(files: list, columns: Columns) -> str | None:
    """For a small JSONL source, read whole: why no record can hold a question (a wrong field name,
    a JSON document instead of JSON Lines), or None. Larger sources are checked by the plan's scan."""
    if any(f.format != "jsonl" for f in files) or sum(f.size for f in files) > _SCANNED_BYTES:
        return None
    first = None
    for file in files:
        for _, record, _ in scan_records(file, columns):
            if isinstance(record, dict) and columns.question in record:
                return None
            first = record if first is None else first
    if first is None:
        return None
    if isinstance(first, list) or (isinstance(first, Unreadable) and first.raw.strip() in ("[", "{")):
        return f"no record has the field {columns.question!r}: the file looks like one JSON document; write " \
               "JSON Lines, one object per line"
    return f"no record has the field {columns.question!r}; name the field that holds the question"


def preflight_problems(cfg: PipelineConfig, stages: tuple[str, ...], model: str | None = None) -> list[str]:
    """Return 'field: what is wrong' for everything the given stages would fail on at the start.

    ``model`` is the model to evaluate when it is not ``cfg.model`` (a checkpoint path)."""
    problems = []
    for name, value in (("model", cfg.model), ("--model", model)):
        if value and (why := model_resolution_problem(value)):
            problems.append(f"{name}: {why}")
    if "sample" in stages:
        problems += [f"sample.questions: {why}" for why in source_problems(cfg.sample.questions,
                                                                          cfg.sample.columns_spec())]
    run_problem = run_dir_problem(cfg.run_dir)
    if "train" in stages and "sample" not in stages and not run_problem:
        manifest = cfg.run_path / "sample" / "manifest.json"
        if not manifest.is_file():
            problems.append(f"run_dir: {manifest} not found: run `upft sample` for this run_dir first")
    if "evaluate" in stages:
        problems += _benchmark_problems(cfg)
        if cfg.eval.judge.model and (why := model_resolution_problem(cfg.eval.judge.model)):
            problems.append(f"eval.judge.model: {why}")
    if run_problem:
        problems.append(f"run_dir: {run_problem}")
    return problems


def _benchmark_problems(cfg: PipelineConfig) -> list[str]:
    """Return why an evaluation set cannot be used: missing or unreadable, or no row with a gold answer
    (every score would be 0). Evaluation sets are small, so they are read whole here."""
    problems = []
    for spec in cfg.eval.benchmarks:
        try:
            load_benchmark(spec, cfg.seed, cfg.eval.max_questions, cfg.eval.columns_spec())
        except (FileNotFoundError, ValueError, KeyError) as err:
            why = _one_line(err)
            problems.append(why if why.startswith("eval.benchmarks") else f"eval.benchmarks: {why}")
        except Exception as err:  # noqa: BLE001 - an odd path or file: the run's failure too, said now
            problems.append(f"eval.benchmarks: {spec[:200]!r} cannot be read ({type(err).__name__}: {_one_line(err)})")
    return problems


def check_ready(cfg: PipelineConfig, stages: tuple[str, ...], model: str | None = None) -> None:
    """Raise ConfigError listing every problem ``preflight_problems`` finds (the CLI exits 2 on it)."""
    if problems := preflight_problems(cfg, stages, model):
        raise ConfigError(problems, "the run")
