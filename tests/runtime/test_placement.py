"""`auto` vLLM replicas and train workers: decided from the GPU count, before any stage starts."""

import pytest
from conftest import REPO

from upft_ray.config import ConfigError, load_config
from upft_ray.runtime.placement import resolve_auto_resources

GPU_BOX = REPO / "configs" / "gpu-1node.yaml"


def test_gpu_box_uses_every_gpu():
    cfg = load_config(GPU_BOX)
    assert (cfg.sample.engine.num_replicas, cfg.eval.engine.num_replicas, cfg.train.num_workers) == ("auto",) * 3
    assert not cfg.run_dir.startswith("/mnt/") and cfg.ray.address == "local"
    for gpus in (1, 2, 8):
        out = resolve_auto_resources(cfg, gpus)
        assert (out.sample.engine.num_replicas, out.eval.engine.num_replicas, out.train.num_workers) == (gpus,) * 3
        assert out.train.use_gpu and out.sample.engine.gpus_per_replica == 1
    assert cfg.sample.engine.num_replicas == "auto"  # the loaded config is left as it was


def test_replicas_of_several_gpus_and_fixed_counts():
    cfg = load_config(GPU_BOX, ["sample.engine.gpus_per_replica=2", "sample.engine.tensor_parallel_size=2",
                                "eval.engine.num_replicas=3", "train.num_workers=4"])
    out = resolve_auto_resources(cfg, 5)
    assert (out.sample.engine.num_replicas, out.eval.engine.num_replicas, out.train.num_workers) == (2, 3, 4)
    plain = load_config(REPO / "configs" / "quickstart.yaml")
    assert resolve_auto_resources(plain, 0) is plain  # nothing says auto: unchanged, GPUs irrelevant


@pytest.mark.parametrize("gpus,field", [(0, "sample.engine.num_replicas"), (1, "sample.engine.num_replicas")])
def test_too_few_gpus_name_the_field(gpus, field):
    cfg = load_config(GPU_BOX, ["sample.engine.gpus_per_replica=2", "sample.engine.tensor_parallel_size=2"])
    with pytest.raises(ValueError, match=field):
        resolve_auto_resources(cfg, gpus)
    with pytest.raises(ValueError, match="train.num_workers: auto found 0 GPU"):
        resolve_auto_resources(load_config(GPU_BOX, ["sample.engine.num_replicas=1", "eval.engine.num_replicas=1"]), 0)


def test_auto_without_gpu_work_is_a_config_error():
    with pytest.raises(ConfigError) as err:
        load_config(GPU_BOX, ["sample.engine.gpus_per_replica=0", "train.use_gpu=false"])
    assert "sample.engine.num_replicas: auto counts GPUs" in str(err.value)
    assert "train.num_workers: auto is one worker per GPU" in str(err.value)
    with pytest.raises(ConfigError, match="expected int or one of"):
        load_config(GPU_BOX, ["train.num_workers=all"])


def test_pipeline_decides_auto_before_any_work(tmp_path, ray_local):
    from upft_ray.orchestration import stages as pipeline

    cfg = load_config(GPU_BOX, [f"run_dir={tmp_path / 'run'}"])  # this machine's Ray has no GPUs
    with pytest.raises(ValueError, match="sample.engine.num_replicas: auto found 0 GPU"):
        pipeline.sample(cfg)
    assert not (tmp_path / "run" / "sample").exists()


def test_readme_one_box_paper_run_keeps_the_official_global_batch():
    import shlex

    readme = (REPO / "README.md").read_text()
    section = readme.split("## One GPU box", 1)[1].split("\n## ", 1)[0]
    start = section.index(".venv/bin/upft run -c jobs/configs/")
    command = section[start:section.index("```", start)].replace("\\\n", " ")
    argv = shlex.split(command)
    path, overrides = argv[argv.index("-c") + 1], argv[argv.index("-c") + 2:]
    cfg = resolve_auto_resources(load_config(REPO / path, overrides), 8)
    t = cfg.train
    assert t.num_workers * t.micro_batch_size * t.gradient_accumulation_steps == 64
    assert cfg.sample.engine.num_replicas == cfg.eval.engine.num_replicas == 8 and cfg.ray.address == "local"
    assert [b.split(":")[0] for b in cfg.eval.benchmarks] == ["gsm8k", "math500", "aime2024", "gpqa_free"]
