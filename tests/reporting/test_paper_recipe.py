"""The paper's UPFT ingredients and how a run's config is told apart from them."""

from upft_ray.config import config_to_dict, load_config
from upft_ray.config.types import UPFT_TASK_TEMPLATE
from upft_ray.reporting.paper_recipe import PAPER_INGREDIENTS, recipe_deviations, recipe_lines


def test_paper_names_the_template():
    assert load_config(None, ["sample.task_template=paper"]).sample.task_template == UPFT_TASK_TEMPLATE


def _stages(overrides=()):
    data = config_to_dict(load_config(None, list(overrides)))
    return {"sample": data["sample"], "train": data["train"]}


def test_the_defaults_are_the_paper_setting():
    assert recipe_deviations(_stages()) == []
    assert recipe_lines(_stages())[0].startswith("Recipe: the paper's UPFT ingredients")


def test_each_ingredient_changed_alone_is_named_with_its_restoring_override():
    cases = {"sample.structure_ratio=0.3": ("sample.structure_ratio", "0.3", "0.1", "sample.structure_ratio=0.1"),
             "train.prefix_eos=none": ("train.prefix_eos", "none", "loss", "train.prefix_eos=loss"),
             "train.prefix_eos=no_loss": ("train.prefix_eos", "no_loss", "loss", "train.prefix_eos=loss"),
             "train.loss_normalization=token": ("train.loss_normalization", "token", "example",
                                                "train.loss_normalization=example"),
             "sample.task_template=": ("sample.task_template", "none", "the paper's template",
                                       "sample.task_template=paper"),
             "sample.task_template= Think.": ("sample.task_template", "a custom one", "the paper's template",
                                              "sample.task_template=paper")}
    for override, expected in cases.items():
        assert recipe_deviations(_stages([override])) == [expected], override
    assert len(PAPER_INGREDIENTS) == 4


def test_the_restoring_overrides_give_back_the_paper_setting():
    changed = ["sample.structure_ratio=0.3", "train.prefix_eos=none", "train.loss_normalization=token",
               "sample.task_template="]
    deviations = recipe_deviations(_stages(changed))
    restore = [o for *_, o in deviations]
    assert recipe_deviations(_stages(changed + restore)) == []
    line = recipe_lines(_stages(changed))[0]
    assert line.startswith("Recipe: **not the paper's setting**") and "one override away" in line


def test_scale_settings_and_other_methods_are_not_deviations():
    assert recipe_deviations(_stages(["sample.prefix_tokens=32", "train.learning_rate=1e-6", "train.epochs=3"])) == []
    assert recipe_lines(_stages(["sample.method=sft", "train.prefix_eos=none"])) == []
