"""Ray Train + DeepSpeed on CPU: ZeRO 1/2/3, a worker killed by SIGKILL, a driver killed and rerun."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest
import torch
from conftest import REPO, tiny_overrides

from upft_ray.config import load_config
from upft_ray.orchestration import stages as pipeline

TRAIN = ["train.micro_batch_size=2", "train.max_length=256", "train.checkpoint_every_steps=5", "train.max_failures=1"]


@pytest.fixture(scope="module")
def sampled(tmp_path_factory, tiny_model_dir, ray_local):
    """A run directory whose sample stage is done: 120 questions on the tiny model."""
    run = tmp_path_factory.mktemp("sampled") / "run"
    pipeline.sample(load_config(None, tiny_overrides(run, tiny_model_dir) + ["sample.max_questions=120"]))
    return run


def _train_config(sampled, tmp_path, tiny_model_dir, name, extra=()):
    run = tmp_path / name
    shutil.copytree(sampled / "sample", run / "sample")
    return load_config(None, tiny_overrides(run, tiny_model_dir) + ["sample.max_questions=120", *TRAIN, *extra])


def _metrics(run):
    return [json.loads(line) for line in (run / "train" / "metrics.jsonl").read_text().splitlines()]


def _weights(run):
    from safetensors.torch import load_file

    return load_file(str(run / "train" / "final" / "model.safetensors"))


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_zero_stages_train_on_cpu(sampled, tmp_path, tiny_model_dir, stage):
    cfg = _train_config(sampled, tmp_path, tiny_model_dir, f"zero{stage}",
                        [f"train.zero_stage={stage}", "train.tensorboard=true", "train.lr_schedule=cosine"])
    manifest = pipeline.train(cfg)
    rows = _metrics(cfg.run_path)
    assert [r["step"] for r in rows] == list(range(1, manifest["counts"]["steps"] + 1))
    assert all(torch.isfinite(torch.tensor(r["loss"])) and r["tokens_per_s"] > 0 for r in rows)
    c = manifest["counts"]
    assert c["steps"] * c["rows_per_step"] <= rows[-1]["consumed_examples"] <= c["examples"]
    assert manifest["resumed_at_steps"] == []
    # what `auto` and the config became on this hardware is recorded: a figure says what made it
    from upft_ray.training.loop import resolve_precision
    assert manifest["trained_with"] == {
        "precision": resolve_precision(cfg.train.precision, False), "world": cfg.train.num_workers, "device": "cpu",
        "zero_stage": stage, "offload_optimizer": False, "attention": "sdpa", "loss_path": "chunked"}
    assert list((cfg.run_path / "train" / "tensorboard").glob("events.out.tfevents.*"))
    assert (cfg.run_path / "train" / "final" / "config.json").is_file()
    # The streamed export holds DeepSpeed's own consolidation of the last checkpoint (fp32 on CPU).
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    reference = get_fp32_state_dict_from_zero_checkpoint(manifest["checkpoint"])
    exported = _weights(cfg.run_path)
    assert manifest["export_dtype"] == "float32" and set(exported) == set(reference) - {"lm_head.weight"}
    assert all(torch.equal(exported[k], reference[k]) for k in exported)
    assert (cfg.run_path / "train" / "loop_config.json").is_file()


def _registered_checkpoints(ckpt_root):
    """Checkpoints Ray Train has registered (every rank reported): only those are resumed from."""
    try:
        return json.loads((ckpt_root / "checkpoint_manager_snapshot.json").read_text())["checkpoint_results"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return []


def _kill_a_worker_after_first_checkpoint(ckpt_root, killed):
    deadline = time.time() + 300
    while time.time() < deadline and not _registered_checkpoints(ckpt_root):
        time.sleep(0.05)
    for proc in psutil.process_iter(["cmdline"]):
        if any("RayTrainWorker" in part for part in proc.info["cmdline"] or []):
            proc.send_signal(signal.SIGKILL)  # no exception, no clean-up: the process is simply gone
            killed.append(proc.pid)
            return


@pytest.mark.slow  # two Ray Train runs and a killed worker: ~1.5 min; the default suite stays under ~15 min
def test_worker_killed_after_a_checkpoint_resumes_to_the_same_weights(sampled, tmp_path, tiny_model_dir):
    plain = _train_config(sampled, tmp_path, tiny_model_dir, "plain", ["train.packing=false"])
    pipeline.train(plain)

    cfg = _train_config(sampled, tmp_path, tiny_model_dir, "killed", ["train.packing=false"])
    killed: list[int] = []
    watcher = threading.Thread(target=_kill_a_worker_after_first_checkpoint,
                               args=(cfg.run_path / "train" / "ray" / "upft-train", killed))
    watcher.start()
    manifest = pipeline.train(cfg)
    watcher.join()
    assert killed, "no train worker was found to kill"

    steps = manifest["counts"]["steps"]
    resumed, uninterrupted = _metrics(cfg.run_path), _metrics(plain.run_path)
    assert [r["step"] for r in resumed] == list(range(1, steps + 1))  # each step logged once
    assert manifest["resumed_at_steps"] and manifest["resumed_at_steps"][0] >= 5  # restarted from a checkpoint
    assert resumed[-1]["consumed_examples"] == uninterrupted[-1]["consumed_examples"] == steps * 4
    for a, b in zip(resumed, uninterrupted):
        assert abs(a["loss"] - b["loss"]) <= 1e-6, (a["step"], a["loss"], b["loss"])
    a, b = _weights(cfg.run_path), _weights(plain.run_path)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-5


@pytest.mark.slow  # minutes of engine or trainer starts; the default suite stays under ~25 min
def test_rerun_after_driver_kill_resumes_from_last_checkpoint(sampled, tmp_path, tiny_model_dir):
    run = tmp_path / "driver"
    shutil.copytree(sampled / "sample", run / "sample")
    command = [sys.executable, "-m", "upft_ray.cli", "train", f"run_dir={run}", f"model={tiny_model_dir}",
               "ray.num_cpus=4", "train.packing=false", *TRAIN]
    env = {**os.environ, "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}
    first = subprocess.Popen(command, cwd=REPO, env=env, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = run / "train" / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and first.poll() is None:
        if _registered_checkpoints(run / "train" / "ray" / "upft-train") and metrics.is_file() and \
                any(json.loads(line)["step"] >= 7 for line in metrics.read_text().splitlines()):
            break
        time.sleep(0.1)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=60)
    time.sleep(2)
    assert not (run / "train" / "manifest.json").exists(), "the first run finished before the kill"

    rerun = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    manifest = json.loads((run / "train" / "manifest.json").read_text())
    assert len(manifest["resumed_at_steps"]) == 1 and manifest["resumed_at_steps"][0] >= 5
    steps = manifest["counts"]["steps"]
    assert [r["step"] for r in _metrics(run)] == list(range(1, steps + 1))
