"""The config models, field by field: every class of bad value is refused naming its dotted field, the
models keep their own cross-field rules, and what a config hashes to did not move with the port."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from upft_ray.config import (
    ConfigError,
    EngineConfig,
    PipelineConfig,
    SampleConfig,
    TrainConfig,
    config_to_dict,
    load_config,
)
from upft_ray.config.errors import explain
from upft_ray.config.hashing import sample_config_hash

SCHEMA = PipelineConfig.model_json_schema()


def _fields(model: type[BaseModel] = PipelineConfig, prefix: str = "") -> dict[str, dict]:
    """Return dotted name -> JSON schema of every leaf field (the schema is pydantic's public account)."""
    props = SCHEMA["properties"] if model is PipelineConfig else SCHEMA["$defs"][model.__name__]["properties"]
    out = {}
    for name, f in model.model_fields.items():
        if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel):
            out.update(_fields(f.annotation, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = props[name]
    return out


FIELDS = _fields()


def _numbers(kind: str) -> dict[str, dict]:
    """Fields taking a number of ``kind`` ("integer"/"number"), alone or beside words: name -> its range."""
    out = {}
    for name, schema in FIELDS.items():
        for option in schema.get("anyOf", [schema]):
            if option.get("type") == kind:
                out[name] = option
    return out


INTS, FLOATS = _numbers("integer"), _numbers("number")
LISTS = [name for name, schema in FIELDS.items() if schema.get("type") == "array"]


def _problems(overrides: list[str]) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    return err.value.problems


def _names_only(problems: list[str], name: str) -> None:
    assert len(problems) == 1 and problems[0].startswith(f"{name}: "), problems


def test_every_field_is_typed_and_described_and_the_corpus_sees_them():
    assert all(schema.get("description") for schema in FIELDS.values())
    assert len(INTS) >= 25 and len(FLOATS) >= 20 and {"sample.engine.num_replicas", "seed"} <= set(INTS)
    assert set(LISTS) == {"eval.benchmarks", "analyze.prefix_lengths", "analyze.rollout_positions", "sweep.seeds",
                          "sweep.variants"}


@pytest.mark.parametrize("name", sorted(n for n, s in INTS.items() if "minimum" in s))
def test_ints_below_their_minimum_are_refused(name):
    _names_only(_problems([f"{name}={INTS[name]['minimum'] - 1}"]), name)


@pytest.mark.parametrize("name", sorted(n for n, s in FLOATS.items() if "minimum" in s))
def test_floats_below_their_minimum_are_refused(name):
    _names_only(_problems([f"{name}={FLOATS[name]['minimum'] - 0.5}"]), name)


@pytest.mark.parametrize("name", sorted(n for n, s in {**INTS, **FLOATS}.items() if "maximum" in s))
def test_numbers_above_their_maximum_are_refused(name):
    _names_only(_problems([f"{name}={({**INTS, **FLOATS})[name]['maximum'] + 1}"]), name)


@pytest.mark.parametrize("value", ["true", "false", "'5'", "5.0", "x", "[1]", "{a: 1}"])
@pytest.mark.parametrize("name", sorted(INTS))
def test_ints_take_no_bool_text_or_float(name, value):
    problems = _problems([f"{name}={value}"])
    _names_only(problems, name)
    assert "expected int" in problems[0]


@pytest.mark.parametrize("value", ["true", "fast", "'nan'", "'inf'", ".nan", "-.inf", "[0.5]"])
@pytest.mark.parametrize("name", sorted(FLOATS))
def test_floats_take_no_bool_no_words_and_no_infinity(name, value):
    _names_only(_problems([f"{name}={value}"]), name)


@pytest.mark.parametrize("name", sorted(FLOATS))
def test_floats_take_ints_and_numeric_text_as_floats(name):
    def value(overrides):
        node = load_config(None, overrides)
        for part in name.split("."):
            node = getattr(node, part)
        return node

    assert value([f"{name}=1"]) == 1.0 and isinstance(value([f"{name}=1"]), float)
    assert value([f"{name}=5e-1"]) == 0.5  # YAML 1.1 reads 5e-1 as text


@pytest.mark.parametrize("name,value", [("run_dir", "5"), ("model", "[a]"), ("sample.questions", "true"),
                                        ("train.use_gpu", "1"), ("train.packing", "'yes'"),
                                        ("sample.engine.dtype", "fp8"), ("eval.engine.dtype", "1"),
                                        ("train.precision", "true"), ("sample.method", "ppo")])
def test_text_bools_and_choices_are_strict(name, value):
    _names_only(_problems([f"{name}={value}"]), name)


@pytest.mark.parametrize("at", ["", "ray.", "sample.", "sample.engine.", "train.", "eval.", "eval.engine.",
                                "analyze.", "sweep."])
def test_unknown_keys_are_named_at_every_level(at):
    problems = _problems([f"{at}bogus=1"])
    _names_only(problems, f"{at}bogus")
    assert "unknown key (known: " in problems[0]


def test_unknown_key_in_a_sweep_variant_is_named_with_its_index():
    _names_only(_problems(["sweep.variants=[{name: a}, {name: b, overides: [seed=1]}]"]), "sweep.variants[1].overides")


@pytest.mark.parametrize("name", LISTS)
@pytest.mark.parametrize("value", ["x", "3", "{a: 1}"])
def test_list_fields_take_lists_only(name, value):
    problems = _problems([f"{name}={value}"])
    _names_only(problems, name)
    assert "expected list" in problems[0]


@pytest.mark.parametrize("name,value", [("eval.benchmarks", "[gsm8k, 3]"), ("eval.benchmarks", "[]"),
                                        ("analyze.prefix_lengths", "[4, 0]"), ("analyze.prefix_lengths", "[4, true]"),
                                        ("analyze.rollout_positions", "[0.5, 1.0]"),
                                        ("analyze.rollout_positions", "[.inf]"), ("sweep.seeds", "[1, 2.5]")])
def test_bad_list_items_name_the_list_and_the_item(name, value):
    problems = _problems([f"{name}={value}"])
    _names_only(problems, name)
    assert "item" in problems[0] or "at least 1" in problems[0]


def test_a_mapping_where_a_stage_belongs_is_named():
    _names_only(_problems(["sample.engine=4"]), "sample.engine")
    _names_only(_problems(["train=[1, 2]"]), "train")


def test_a_section_with_every_setting_commented_out_takes_the_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("seed: 3\nsample:\n  # prefix_tokens: 16\nsweep:\n")
    cfg = load_config(path)
    assert cfg.seed == 3 and cfg.sample == SampleConfig() and cfg.sweep.variants == []


def test_the_models_keep_their_own_rules():
    with pytest.raises(ValidationError, match="max_new_tokens: 4096 tokens do not fit in engine.max_model_len"):
        SampleConfig(max_new_tokens=4096)
    with pytest.raises(ValidationError, match="tensor_parallel_size: 2 splits each replica"):
        EngineConfig(tensor_parallel_size=2)
    engine = EngineConfig()
    with pytest.raises(ValidationError, match="num_replicas: auto counts GPUs"):
        engine.num_replicas = "auto"  # assignments are validated, rules included
    with pytest.raises(ValidationError) as err:
        TrainConfig(learning_rate=float("nan"), offload_optimizer=True)
    assert [str(p) for p in explain(err.value, TrainConfig)] == ["learning_rate: nan is not a finite number"]


def test_a_rule_beside_a_bad_field_of_the_same_stage_is_still_reported():
    problems = _problems(["sample.structure_ratio=2", "sample.max_new_tokens=4096", "analyze.max_new_tokens=4096",
                          "train.zero_stage=9", "train.num_workers=auto"])
    assert [p.split(":")[0] for p in problems] == ["sample.structure_ratio", "train.zero_stage",
                                                   "sample.max_new_tokens", "train.num_workers",
                                                   "analyze.max_new_tokens"]


def test_a_rule_that_reads_a_bad_field_stays_quiet():
    # max_model_len is bad: whether 4096 tokens fit cannot be said, and its own line says what to fix
    _names_only(_problems(["sample.max_new_tokens=4096", "sample.engine.max_model_len=big"]),
                "sample.engine.max_model_len")
    _names_only(_problems(["sample.temperature=0", "sample.num_samples=two"]), "sample.num_samples")


def test_two_rules_on_one_field_make_one_line():
    problems = _problems(["train.offload_optimizer=true", "train.zero_stage=0"])
    _names_only(problems, "train.offload_optimizer")
    assert "CPU" in problems[0] and "ZeRO stage" in problems[0]


def test_what_configs_hash_to_did_not_move():
    # Recorded from the dataclass configs before the pydantic port: resumes and plan.json compare these.
    cfg = load_config(None)
    assert sample_config_hash(cfg) == SAMPLE_HASH_OF_DEFAULTS
    assert list(config_to_dict(cfg)) == ["run_dir", "label", "model", "seed", "ray", "sample", "train", "eval", "analyze",
                                         "sweep"]
    assert config_to_dict(cfg.sample.engine) == {
        "dtype": "auto", "max_model_len": 2048, "enforce_eager": True, "tensor_parallel_size": 1,
        "gpu_memory_utilization": 0.9, "cpu_kv_cache_gib": 2, "num_replicas": 1, "cpus_per_replica": 1.0,
        "gpus_per_replica": 0.0, "max_batches_in_flight": 4, "batch_size": 64,
        # added later, in no hash: resource and watch settings, and a backend and chat template hashed only when set
        "stall_timeout_s": 120.0, "speculative_tail": True, "lost_work_timeout_s": 600.0, "backend": "vllm",
        "chat_template": "model"}
    variant = load_config(None, ["sweep.variants=[{name: a}]"]).sweep.variants[0]
    assert variant == {"name": "a"}  # a variant stays a plain dict, no keys added


SAMPLE_HASH_OF_DEFAULTS = "83e4fecd3f83e8f9"
