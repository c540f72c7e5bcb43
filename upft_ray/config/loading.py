"""Loading the pipeline's config: YAML (with ``base:`` inheritance) plus dotted overrides, validated into
a PipelineConfig of per-stage pydantic models (``upft_ray.config.models``).

Loading checks unknown keys, types, value ranges, the rules between fields (``upft_ray.config.rules``)
and that ``model`` names something usable (``upft_ray.config.model_refs``) before any work starts, and
reports every problem in one ``ConfigError``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ValidationError

from upft_ray.config.errors import ConfigError, Problem, explain
from upft_ray.config.model_refs import model_problem
from upft_ray.config.models import PipelineConfig
from upft_ray.config.overrides import apply_overrides, read_config_data, without
from upft_ray.config.rules import RULES_OFF, all_rules


def config_from_dict(data: dict, source: str = "config") -> PipelineConfig:
    """Build and validate a PipelineConfig; raises ConfigError listing every problem.

    Pydantic checks each field; the rules between fields run afterwards on the fields that passed (a
    bad field is left at its default there, and a rule reading it is skipped: its own line says
    enough), so one error lists the bad fields and the broken rules together."""
    problems: list[Problem] = []
    try:
        cfg: PipelineConfig | None = PipelineConfig.model_validate(data, context=RULES_OFF)
    except ValidationError as err:
        problems = explain(err, PipelineConfig)
        cfg = _good_fields(data, problems)
    dropped = [".".join(p.drop) for p in problems if p.drop]
    if cfg is not None:
        problems += [p for p in all_rules(cfg) if not _reads_any(p.reads, dropped)]
        if "model" not in dropped:
            problems += _model_problems(cfg.model)
        if cfg.eval.judge.model and "eval.judge.model" not in dropped:
            problems += _model_problems(cfg.eval.judge.model, "eval.judge.model")
    if problems:
        raise ConfigError(_one_line_per_field(problems), source)
    return cfg


def _one_line_per_field(problems: list[Problem]) -> list[str]:
    lines: dict[str, list[str]] = {}
    for p in problems:
        lines.setdefault(p.field, []).append(p.message)
    return [f"{field}: {'; '.join(messages)}" for field, messages in lines.items()]


def _good_fields(data: dict, problems: list[Problem]) -> PipelineConfig | None:
    """Return the config with every bad field left out (at its default), None if even that does not check."""
    try:
        return PipelineConfig.model_validate(without(data, [p.drop for p in problems]), context=RULES_OFF)
    except ValidationError:
        return None


def _reads_any(reads: tuple[str, ...], dropped: list[str]) -> bool:
    return any(r == d or r.startswith(d + ".") for r in reads for d in dropped)


def _model_problems(model: str, field: str = "model") -> list[Problem]:
    """The check that looks outside the config: is ``model`` (of ``field``) a bundled name, a checkpoint or a
    hub id."""
    try:
        why = model_problem(model)
    except (OSError, ValueError, RuntimeError) as err:  # a name too long for a path, a ~user that does not exist
        why = f"{model[:200]!r} cannot be looked up ({err})"
    return [Problem(field, why)] if why else []


def config_to_dict(cfg: BaseModel) -> dict:
    """Return a config model as a plain dict (for manifests and reports)."""
    return cfg.model_dump()


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> PipelineConfig:
    """Load a PipelineConfig from YAML (or the defaults when ``path`` is None) plus overrides.

    Raises FileNotFoundError naming a missing file, ConfigError listing every bad field."""
    data: dict = {}
    source = "defaults"
    if path is not None:
        data = read_config_data(Path(path))
        source = str(path)
    return config_from_dict(apply_overrides(data, overrides or []), source)


def field_docs(cls: type[BaseModel] = PipelineConfig, prefix: str = "") -> list[tuple[str, str, str]]:
    """Return (dotted name, default, description) for every field, for docs and ``--help`` text."""
    rows = []
    for name, f in cls.model_fields.items():
        if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel):
            rows.extend(field_docs(f.annotation, f"{prefix}{name}."))
        else:
            rows.append((f"{prefix}{name}", repr(f.get_default(call_default_factory=True)), f.description or ""))
    return rows
