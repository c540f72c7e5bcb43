"""KubeRay manifests validate against the RayCluster/RayJob schemas; job configs load and fit their clusters."""

import re
import shlex
import subprocess
import sys

import jsonschema
import pytest
import yaml
from conftest import REPO
from kuberay_schema import SCHEMAS

from upft_ray.config import load_config

MANIFESTS = sorted((REPO / "cluster").glob("*.yaml"))
JOB_CONFIGS = sorted((REPO / "jobs" / "configs").glob("*.yaml"))
GPUS_PER_NODE = 8


def schema_errors(doc: dict) -> list[str]:
    """Return every schema violation in one manifest as 'path: message'."""
    validator = jsonschema.Draft202012Validator(SCHEMAS[doc["kind"]])
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def test_every_manifest_kind_is_covered():
    kinds = {yaml.safe_load(p.read_text())["kind"] for p in MANIFESTS}
    assert kinds == {"RayCluster", "RayJob"} and len(MANIFESTS) >= 5


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_validates_against_the_kuberay_schema(path):
    docs = list(yaml.safe_load_all(path.read_text()))
    assert len(docs) == 1
    assert schema_errors(docs[0]) == []


def test_schema_rejects_what_the_api_server_would_drop_or_refuse():
    doc = yaml.safe_load((REPO / "cluster" / "raycluster.yaml").read_text())
    doc["spec"]["workerGroupSpecs"][0]["replica"] = 2                      # misspelt: would be pruned silently
    doc["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0         # must be a string
    del doc["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["image"]
    doc["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = "lots"
    errors = "\n".join(schema_errors(doc))
    for expected in ("'replica' was unexpected", "num-cpus: 0 is not of type 'string'", "'image' is a required",
                     "limits/cpu"):
        assert expected in errors, errors


def test_manifests_are_rendered_from_their_description():
    out = subprocess.run([sys.executable, str(REPO / "cluster" / "render.py"), "--check"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def _env_entries(doc):
    spec = doc["spec"].get("rayClusterSpec", doc["spec"])
    for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
        for container in group["template"]["spec"]["containers"]:
            yield container, group


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_no_secret_values_in_manifests(path):
    doc = yaml.safe_load(path.read_text())
    for container, _ in _env_entries(doc):
        for env in container.get("env", []):
            if re.search(r"TOKEN|SECRET|PASSWORD|KEY", env["name"]):
                assert "value" not in env and "secretKeyRef" in env["valueFrom"], env
    assert not re.search(r"(hf_[A-Za-z0-9]{20,}|AKIA[0-9A-Z]{16})", path.read_text())


RAYJOBS = [p for p in MANIFESTS if p.name.startswith("rayjob-")]


@pytest.mark.parametrize("path", RAYJOBS, ids=lambda p: p.name)
def test_rayjob_runs_job_configs_that_fit_its_cluster(path):
    spec = yaml.safe_load(path.read_text())["spec"]
    assert spec["shutdownAfterJobFinishes"] and spec["ttlSecondsAfterFinished"] > 0 and spec["activeDeadlineSeconds"]
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert set(runtime_env) == {"env_vars"}   # the code and the packages are the image's (test_image.py)
    argv = shlex.split(spec["entrypoint"])
    assert argv[:2] == ["python", "jobs/upft_pipeline.py"] and (REPO / argv[1]).is_file()
    configs = [argv[i + 1] for i, a in enumerate(argv) if a == "--config"]
    # the UPFT run, then its baselines (SFT, RFT, label filter), each its run with the method changed
    assert load_config(REPO / configs[0]).sample.method == "upft" and len(configs) >= 2
    assert all(c.startswith(configs[0][:-len(".yaml")] + "-") for c in configs[1:])
    assert {load_config(REPO / c).sample.method for c in configs[1:]} <= {"sft", "rft", "label_filter"}
    cluster = spec["rayClusterSpec"]
    gpus = sum(int(g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu", 0))
               * g["maxReplicas"] for g in cluster["workerGroupSpecs"])
    mounts = {m["mountPath"] for c, _ in _env_entries({"spec": spec}) for m in c["volumeMounts"]}
    for name in configs:
        cfg = load_config(REPO / name)
        assert cfg.sample.engine.num_replicas * cfg.sample.engine.gpus_per_replica <= gpus
        assert cfg.eval.engine.num_replicas * cfg.eval.engine.gpus_per_replica <= gpus
        assert cfg.train.use_gpu and cfg.train.num_workers <= gpus and cfg.train.num_workers % GPUS_PER_NODE == 0
        assert any(cfg.run_dir.startswith(m + "/") for m in mounts), "run_dir must be on storage every pod mounts"


@pytest.mark.parametrize("path", JOB_CONFIGS, ids=lambda p: p.name)
def test_job_config_loads_and_says_how_to_launch(path):
    cfg = load_config(path)
    assert cfg.ray.address == "auto" and cfg.run_dir.startswith("/mnt/shared/runs/")
    lines = path.read_text().splitlines()
    command = "evaluate" if path.stem.endswith("-base") else "run"  # a base row evaluates the model as it is
    assert lines[0].startswith("#") and f"upft {command} -c jobs/configs/{path.name}" in lines[1]


def test_job_configs_follow_the_paper():
    expect = {"qwen-math-omi2": (32, 0.1, 1), "qwen-math-uhard": (32, 0.1, 1), "llama-prm12k": (8, 0.1, 2),
              "r1distill-limo": (128, 0.3, 3)}
    for name, (t, p, epochs) in expect.items():
        cfg = load_config(REPO / "jobs" / "configs" / f"{name}.yaml")
        assert (cfg.sample.prefix_tokens, cfg.sample.structure_ratio, cfg.train.epochs) == (t, p, epochs)
        assert cfg.train.zero_stage == 3 and cfg.train.precision == "bf16"
        t_ = cfg.train
        assert t_.num_workers * t_.micro_batch_size * t_.gradient_accumulation_steps == 64  # official global batch
        assert t_.loss_normalization == "example" and not t_.packing and t_.offload_optimizer
        assert (cfg.sample.temperature, cfg.sample.top_p, cfg.sample.top_k, cfg.sample.num_samples) == \
            (0.6, "model", "model", 1)
        assert cfg.eval.decoding == "greedy" and cfg.eval.max_new_tokens == cfg.eval.engine.max_model_len
        assert cfg.eval.engine.max_model_len == (4096 if "qwen-math" in name else 8192)  # the official contexts
        assert [b.split(":")[0] for b in cfg.eval.benchmarks] == ["gsm8k", "math500", "aime2024", "gpqa_free"]
