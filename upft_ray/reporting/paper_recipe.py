"""The UPFT recipe's ingredients as the official code sets them, and how a run's config differs from them.

Every ingredient of the method, its sampling and its optimiser is compared (``../shared/UPFT.md``,
"What the official code does exactly"; the job configs' full table: README, "Paper fidelity"): the
structure share p (0.1; the paper's 0.3 for LIMO's 0.8K questions), the task template on prefix rows,
one sample per question at temperature 0.6 with the model's top_p / top_k, what a prefix row ends
with, per-example loss normalisation, no packing, AdamW betas (0.9, 0.95) without weight decay,
clipping at 1.0, a constant schedule after 3% warm-up, and an epoch's last incomplete batch carried
into the next. The prefix length t, learning rate, epochs, batch, lengths and model are scale
settings (the paper picks t per model and the lr and epochs per dataset), so a report shows them but
does not call them deviations.
"""

from __future__ import annotations

from upft_ray.config import SampleConfig, TrainConfig
from upft_ray.config.types import UPFT_TASK_TEMPLATE

MODEL = "model"  # a sampling field taken from the model's generation_config, as the official sampler does
# (stage, field) -> the official code's value
PAPER_INGREDIENTS: dict[tuple[str, str], object] = {
    ("sample", "structure_ratio"): 0.1,
    ("sample", "task_template"): UPFT_TASK_TEMPLATE,
    ("sample", "num_samples"): 1,
    ("sample", "temperature"): 0.6,
    ("sample", "top_p"): MODEL,
    ("sample", "top_k"): MODEL,
    ("train", "prefix_eos"): "loss",
    ("train", "loss_normalization"): "example",
    ("train", "packing"): False,
    ("train", "adam_beta1"): 0.9,
    ("train", "adam_beta2"): 0.95,
    ("train", "weight_decay"): 0.0,
    ("train", "max_grad_norm"): 1.0,
    ("train", "lr_schedule"): "constant",
    ("train", "warmup_ratio"): 0.03,
    ("train", "epoch_tail"): "carry",
}


def paper_value(stage: str, field: str, sample: dict) -> object:
    """Return the official value of ``stage.field`` for a run sampling with ``sample`` (p is 0.3 for LIMO)."""
    if (stage, field) == ("sample", "structure_ratio") and "limo" in str(sample.get("questions", "")).lower():
        return 0.3
    return PAPER_INGREDIENTS[(stage, field)]


def _show(field: str, value: object) -> str:
    if field == "task_template":
        return "the paper's template" if value == UPFT_TASK_TEMPLATE else ("none" if not value else "a custom one")
    return str(value).lower() if isinstance(value, bool) else str(value)


def _override(stage: str, field: str, value: object) -> str:
    return f"{stage}.{field}={'paper' if field == 'task_template' else _show(field, value)}"


def _ours(stage_configs: dict[str, dict], stage: str, field: str) -> object:
    """Return the run's value of ``stage.field``: a sampling field the model's generation_config gave (the
    sample manifest's ``sampling_params.from_model``) reads ``model``, as it was written; a field a config
    recorded before the field existed has its default (what that run did)."""
    if stage == "sample" and field in stage_configs.get("sampling", {}).get("from_model", ()):
        return MODEL
    default = {"sample": SampleConfig, "train": TrainConfig}[stage].model_fields[field].default
    return stage_configs[stage].get(field, default)


def recipe_deviations(stage_configs: dict[str, dict]) -> list[tuple[str, str, str, str]]:
    """Return (field, this run's value, the paper's value, the override that restores it) for every
    UPFT ingredient in ``stage_configs`` ({"sample": {...}, "train": {...}}, as the stage manifests record
    them, and optionally "sampling": the sample manifest's ``sampling_params``) that differs from the official
    code. Stages or fields not given are not compared."""
    out = []
    sample = stage_configs.get("sample", {})
    for stage, field in PAPER_INGREDIENTS:
        if stage not in stage_configs:
            continue
        paper, ours = paper_value(stage, field, sample), _ours(stage_configs, stage, field)
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
        return ["Recipe: the paper's UPFT ingredients, as the official code sets them (p, the task template on "
                "prefix rows, one sample at temperature 0.6 with the model's top_p / top_k, EOS with loss after t "
                "tokens, per-example loss normalisation, no packing, AdamW (0.9, 0.95) without weight decay, "
                "clipping 1.0, constant lr after 3% warm-up, epoch tails carried).", ""]
    differs = "; ".join(f"`{f}` = {ours} (paper: {paper})" for f, ours, paper, _ in deviations)
    restore = " ".join(o for *_, o in deviations)
    return [f"Recipe: **not the paper's setting** in {len(deviations)} of {len(PAPER_INGREDIENTS)} ingredients: "
            f"{differs}. The paper's setting is these overrides away: `{restore}`.", ""]
