"""The paper's UPFT ingredients and how a run's config is told apart from them."""

from upft_ray.config import config_to_dict, load_config
from upft_ray.config.types import UPFT_TASK_TEMPLATE
from upft_ray.reporting.paper_recipe import PAPER_INGREDIENTS, recipe_deviations, recipe_lines

PAPER = ["sample.temperature=0.6", "train.adam_beta2=0.95", "train.packing=false", "train.epoch_tail=carry"]


def test_paper_names_the_template():
    assert load_config(None, ["sample.task_template=paper"]).sample.task_template == UPFT_TASK_TEMPLATE


def _stages(overrides=(), path=None):
    data = config_to_dict(load_config(path, list(overrides)))
    return {"sample": data["sample"], "train": data["train"]}


def test_the_paper_setting_is_recognised():
    assert recipe_deviations(_stages(PAPER)) == []
    assert recipe_lines(_stages(PAPER))[0].startswith("Recipe: the paper's UPFT ingredients")


def test_the_defaults_name_every_ingredient_they_change_and_how_to_restore_it():
    deviations = {d[0]: d for d in recipe_deviations(_stages())}
    assert set(deviations) == {"sample.temperature", "train.adam_beta2", "train.packing", "train.epoch_tail"}
    assert deviations["train.adam_beta2"] == ("train.adam_beta2", "0.999", "0.95", "train.adam_beta2=0.95")
    assert deviations["train.packing"][3] == "train.packing=false"


def test_each_ingredient_changed_alone_is_named_with_its_restoring_override():
    cases = {"sample.structure_ratio=0.3": ("sample.structure_ratio", "0.3", "0.1", "sample.structure_ratio=0.1"),
             "train.prefix_eos=none": ("train.prefix_eos", "none", "loss", "train.prefix_eos=loss"),
             "train.prefix_eos=no_loss": ("train.prefix_eos", "no_loss", "loss", "train.prefix_eos=loss"),
             "train.loss_normalization=token": ("train.loss_normalization", "token", "example",
                                                "train.loss_normalization=example"),
             "sample.task_template=": ("sample.task_template", "none", "the paper's template",
                                       "sample.task_template=paper"),
             "sample.task_template= Think.": ("sample.task_template", "a custom one", "the paper's template",
                                              "sample.task_template=paper"),
             "sample.top_p=1.0": ("sample.top_p", "1.0", "model", "sample.top_p=model"),
             "sample.top_k=0": ("sample.top_k", "0", "model", "sample.top_k=model"),
             "train.adam_beta1=0.8": ("train.adam_beta1", "0.8", "0.9", "train.adam_beta1=0.9"),
             "train.weight_decay=0.1": ("train.weight_decay", "0.1", "0.0", "train.weight_decay=0.0"),
             "train.lr_schedule=cosine": ("train.lr_schedule", "cosine", "constant", "train.lr_schedule=constant"),
             "train.warmup_ratio=0.1": ("train.warmup_ratio", "0.1", "0.03", "train.warmup_ratio=0.03"),
             "train.max_grad_norm=0.5": ("train.max_grad_norm", "0.5", "1.0", "train.max_grad_norm=1.0"),
             "sample.num_samples=4": ("sample.num_samples", "4", "1", "sample.num_samples=1")}
    for override, expected in cases.items():
        assert recipe_deviations(_stages(PAPER + [override])) == [expected], override
    assert len(PAPER_INGREDIENTS) == 16


def test_the_restoring_overrides_give_back_the_paper_setting():
    changed = ["sample.structure_ratio=0.3", "train.prefix_eos=none", "train.loss_normalization=token",
               "sample.task_template=", "sample.top_p=1.0", "sample.top_k=0"]
    deviations = recipe_deviations(_stages(changed))
    restore = [o for *_, o in deviations]
    assert recipe_deviations(_stages(changed + restore)) == []
    line = recipe_lines(_stages(changed))[0]
    assert line.startswith("Recipe: **not the paper's setting** in 10 of 16") and "sample.top_k=model" in line


def test_values_the_model_gave_count_as_model_and_limo_takes_p_0_3():
    stages = _stages(PAPER + ["sample.top_p=0.9", "sample.top_k=20"])
    assert recipe_deviations({**stages, "sampling": {"from_model": ["top_p", "top_k"]}}) == []
    limo = _stages(PAPER + ["sample.questions=/data/prepared/limo.jsonl", "sample.structure_ratio=0.3"])
    assert recipe_deviations(limo) == []


def test_a_field_recorded_before_it_existed_counts_as_its_default():
    stages = _stages(PAPER)
    del stages["train"]["epoch_tail"]  # a manifest written before train.epoch_tail: those runs dropped the tail
    assert [d[0] for d in recipe_deviations(stages)] == ["train.epoch_tail"]


def test_the_paper_job_configs_use_every_ingredient():
    from conftest import REPO
    for name in ("llama-prm12k", "qwen-math-limo", "r1distill-uhard"):
        assert recipe_deviations(_stages(path=REPO / "jobs" / "configs" / f"{name}.yaml")) == [], name


def test_scale_settings_and_other_methods_are_not_deviations():
    assert recipe_deviations(_stages(PAPER + ["sample.prefix_tokens=32", "train.learning_rate=1e-6",
                                              "train.epochs=3"])) == []
    assert recipe_lines(_stages(["sample.method=sft", "train.prefix_eos=none"])) == []
