"""The UPFT recipe's ingredients as the official code sets them, and how a run's config differs from them.

Only the ingredients that define the method are compared (``../shared/UPFT.md``, "What the official
code does exactly"): the structure share p, the task template on prefix rows, what a prefix row ends
with, and per-example loss normalisation. The prefix length t and the learning rate are scale
settings (the paper picks t per model and the lr per dataset), so a report shows them but does not
call them deviations.
"""

from __future__ import annotations

from upft_ray.config.types import UPFT_TASK_TEMPLATE

# (stage, field) -> the official code's value
PAPER_INGREDIENTS: dict[tuple[str, str], object] = {
    ("sample", "structure_ratio"): 0.1,
    ("sample", "task_template"): UPFT_TASK_TEMPLATE,
    ("train", "prefix_eos"): "loss",
    ("train", "loss_normalization"): "example",
}


def _show(field: str, value: object) -> str:
    if field == "task_template":
        return "the paper's template" if value == UPFT_TASK_TEMPLATE else ("none" if not value else "a custom one")
    return str(value)


def _override(stage: str, field: str, value: object) -> str:
    return f"{stage}.{field}={'paper' if field == 'task_template' else value}"  # the config's name for the text


def recipe_deviations(stage_configs: dict[str, dict]) -> list[tuple[str, str, str, str]]:
    """Return (field, this run's value, the paper's value, the override that restores it) for every
    UPFT ingredient in ``stage_configs`` ({"sample": {...}, "train": {...}}, as the stage manifests
    record them) that differs from the official code. Stages or fields not given are not compared."""
    out = []
    for (stage, field), paper in PAPER_INGREDIENTS.items():
        ours = stage_configs.get(stage, {}).get(field, paper)
        if ours != paper:
            out.append((f"{stage}.{field}", _show(field, ours), _show(field, paper), _override(stage, field, paper)))
    return out


def recipe_lines(stage_configs: dict[str, dict]) -> list[str]:
    """Return Markdown lines saying whether a UPFT run used the paper's ingredients, and if not, which
    differ and the overrides that give the paper's setting (empty for other methods: SFT, RFT, ...)."""
    if stage_configs.get("sample", {}).get("method", "upft") != "upft":
        return []
    deviations = recipe_deviations(stage_configs)
    if not deviations:
        return ["Recipe: the paper's UPFT ingredients (p = 0.1, the task template on prefix rows, EOS with loss "
                "after t tokens, per-example loss normalisation), as the official code sets them.", ""]
    differs = "; ".join(f"`{f}` = {ours} (paper: {paper})" for f, ours, paper, _ in deviations)
    restore = " ".join(o for *_, o in deviations)
    return [f"Recipe: **not the paper's setting**: {differs}. The paper's setting is one override away: "
            f"`{restore}`.", ""]
