"""A corpus of config values that must be rejected before any work starts, each naming its field,
and the neighbours that must still load. Errors keep one shape: ConfigError, exit 2, one line per
bad field, no traceback. Manifests are strict JSON whatever a stage computed."""

from __future__ import annotations

import json
import subprocess
import sys
import typing

import numpy as np
import pytest
from conftest import REPO
from pydantic import BaseModel

from upft_ray.config import ConfigError, PipelineConfig, load_config
from upft_ray.io.manifests import write_json_atomic


def _holds_float(tp) -> bool:
    """A float field, plain, ranged (Annotated) or in a union with words ("model")."""
    if typing.get_origin(tp) in (list, dict):
        return False
    return tp is float or any(_holds_float(arg) for arg in typing.get_args(tp))


def _float_fields(cls=PipelineConfig, prefix: str = "") -> list[str]:
    names = []
    for name, f in cls.model_fields.items():
        if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel):
            names += _float_fields(f.annotation, f"{prefix}{name}.")
        elif _holds_float(f.annotation):
            names.append(f"{prefix}{name}")
    return names


FLOAT_FIELDS = _float_fields()
NON_FINITE = [".nan", ".NaN", ".inf", "-.inf", "+.inf"]


def _problems(overrides: list[str], path=None) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load_config(path, overrides)
    return err.value.problems


def test_corpus_covers_every_float_field():
    assert len(FLOAT_FIELDS) >= 15 and {"sample.structure_ratio", "sample.temperature"} <= set(FLOAT_FIELDS)


@pytest.mark.parametrize("value", NON_FINITE)
@pytest.mark.parametrize("name", FLOAT_FIELDS)
def test_non_finite_floats_are_rejected_from_overrides(name, value):
    problems = _problems([f"{name}={value}"])
    assert len(problems) == 1 and problems[0].startswith(f"{name}:"), problems


def test_non_finite_floats_are_rejected_from_yaml(tmp_path):
    path = tmp_path / "nan.yaml"
    path.write_text("sample:\n  structure_ratio: .nan\n  engine:\n    gpu_memory_utilization: .inf\n"
                    "train:\n  learning_rate: .inf\n  warmup_ratio: -.inf\neval:\n  temperature: .nan\n"
                    "analyze:\n  rollout_positions: [0.0, .nan]\n")
    problems = _problems([], path)
    for name in ("sample.structure_ratio", "sample.engine.gpu_memory_utilization", "train.learning_rate",
                 "train.warmup_ratio", "eval.temperature", "analyze.rollout_positions"):
        assert any(p.startswith(f"{name}:") for p in problems), (name, problems)


BAD = [  # (overrides, the field the one problem must name)
    (["seed=-1"], "seed"),
    (["seed=4294967296"], "seed"),
    (["sweep.seeds=[1, -3]"], "sweep.seeds"),
    (["sample.max_new_tokens=4096"], "sample.max_new_tokens"),
    (["sample.max_new_tokens=600", "sample.engine.max_model_len=512"], "sample.max_new_tokens"),
    (["sample.prefix_tokens=4096"], "sample.prefix_tokens"),
    (["eval.max_new_tokens=4096"], "eval.max_new_tokens"),
    (["analyze.max_new_tokens=4096"], "analyze.max_new_tokens"),
    (["sample.engine.gpus_per_replica=1", "sample.engine.tensor_parallel_size=2"], "sample.engine.gpus_per_replica"),
    (["sample.engine.tensor_parallel_size=2"], "sample.engine.tensor_parallel_size"),
    (["eval.engine.gpus_per_replica=4", "eval.engine.tensor_parallel_size=2"], "eval.engine.gpus_per_replica"),
    (["sample.engine.gpus_per_replica=1.5"], "sample.engine.gpus_per_replica"),
    (["sample.num_samples=4", "sample.temperature=0"], "sample.temperature"),
    (["sample.method=rft", "sample.num_samples=8", "sample.temperature=0.0"], "sample.temperature"),
    (["eval.decoding=sample", "eval.num_samples=4", "eval.temperature=0"], "eval.temperature"),
    (["sample.prefix_tokens=auto", "sample.temperature=0"], "sample.temperature"),
    (["sample.top_p=0"], "sample.top_p"),
    (["eval.decoding=sample", "eval.top_p=0"], "eval.top_p"),
    (["sample.engine.backend=vllm2"], "sample.engine.backend"),
    (["eval.engine.backend=engines.PoisonEngine"], "eval.engine.backend"),
    (["sample.engine.backend=:Class"], "sample.engine.backend"),
    (["sample.engine.stall_timeout_s=0"], "sample.engine.stall_timeout_s"),
]


@pytest.mark.parametrize("overrides,name", BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_values_and_combinations_are_rejected(overrides, name):
    problems = _problems(overrides)
    assert any(p.startswith(f"{name}:") for p in problems), problems


GOOD = [
    ["sample.max_new_tokens=2048"],  # equal to max_model_len: the engine fits it to each prompt
    ["sample.engine.gpus_per_replica=2", "sample.engine.tensor_parallel_size=2"],
    ["sample.engine.gpus_per_replica=0.5"],  # two small replicas sharing one GPU
    ["sample.temperature=0"],  # greedy, one sample
    ["eval.decoding=greedy", "eval.temperature=0"],
    ["seed=0"],
    ["sample.structure_ratio=1e-3", "train.learning_rate=5e-6"],
    ["sample.engine.backend=engines:PoisonEngine", "eval.engine.backend=my_pkg.engines:Fast_2"],
]


@pytest.mark.parametrize("overrides", GOOD, ids=[" ".join(o) for o in GOOD])
def test_sound_neighbours_still_load(overrides):
    load_config(None, overrides)


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n", "~\n"])
def test_empty_yaml_file_is_rejected_naming_it(tmp_path, text):
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="empty.yaml"):
        load_config(path)


def test_empty_base_file_is_rejected_naming_it(tmp_path):
    (tmp_path / "parent.yaml").write_text("# nothing here\n")
    child = tmp_path / "child.yaml"
    child.write_text("base: parent.yaml\nseed: 3\n")
    with pytest.raises(ConfigError, match="parent.yaml"):
        load_config(child)


def test_every_problem_is_listed_at_once():
    problems = _problems(["seed=-1", "sample.structure_ratio=.nan", "train.learning_rate=.inf",
                          "sample.max_new_tokens=9999"])
    assert len(problems) == 4


def _cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "upft_ray.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def test_cli_rejects_bad_values_with_exit_2_and_one_line_each(tmp_path):
    out = _cli("sample", f"run_dir={tmp_path / 'run'}", "sample.structure_ratio=.nan", "seed=-1",
               "sample.max_new_tokens=4096")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip().startswith("- ")]
    assert len(lines) == 3 and {line.split(":")[0].strip("- ") for line in lines} == {
        "sample.structure_ratio", "seed", "sample.max_new_tokens"}
    assert not (tmp_path / "run").exists()


def test_cli_rejects_an_empty_config_file(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    out = _cli("sample", "-c", str(empty))
    assert out.returncode == 2 and str(empty) in out.stderr and "Traceback" not in out.stderr


def test_manifests_are_strict_json_whatever_a_stage_computed(tmp_path):
    path = tmp_path / "manifest.json"
    write_json_atomic(path, {"loss": float("nan"), "ratio": [float("inf"), -float("inf"), 0.5],
                             "np": np.float32("nan"), "nested": {"x": np.float64("inf"), "ok": 1}})

    def refuse(token):
        raise AssertionError(f"invalid JSON token {token}")

    data = json.loads(path.read_text(), parse_constant=refuse)
    assert data == {"loss": None, "ratio": [None, None, 0.5], "np": None, "nested": {"x": None, "ok": 1}}


ODD = [  # (overrides, the field the problem must name): values that once escaped as tracebacks
    (["sample.questions=[unclosed"], "sample.questions"),
    (["model=" + "m" * 5000], "model"),
    (["seed=" + "[" * 3000], "seed"),
]


@pytest.mark.parametrize("overrides,name", ODD, ids=["bad-yaml-override", "model-name-too-long", "deep-override"])
def test_odd_override_values_are_config_errors(overrides, name):
    problems = _problems(overrides)
    assert any(p.startswith(f"{name}:") for p in problems), problems


def test_odd_yaml_files_are_config_errors(tmp_path):
    nul = tmp_path / "nul.yaml"
    nul.write_text('run_dir: "runs/a\\0b"\nmodel: "x\\0y"\n')
    problems = _problems([], nul)
    assert any(p.startswith("run_dir:") for p in problems) and any(p.startswith("model:") for p in problems)
    deep = tmp_path / "deep.yaml"
    deep.write_text("seed: " + "[" * 3000 + "]" * 3000 + "\n")
    with pytest.raises(ConfigError, match="deep.yaml"):
        load_config(deep)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"seed: \xff\xfe\n")
    with pytest.raises(ConfigError, match="binary.yaml"):
        load_config(binary)
