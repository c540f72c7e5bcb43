"""bench/gpu_check.sh: the real loop under torchrun, killed and resumed, exported (--tiny on CPU; full on GPUs)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


def _run(tmp_path, *args):
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), *args, "--out", str(tmp_path),
                           "--work", str(tmp_path / "work")], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)


def test_gpu_check_tiny_runs_on_cpu(tmp_path):
    done = _run(tmp_path, "--tiny")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    result = json.loads((tmp_path / "gpu_check_tiny.json").read_text())
    stage = result["stages"]["zero2"]
    assert result["ok"] and all(stage["checks"].values()) and len(stage["checks"]) == 7
    assert stage["max_abs_diff_resumed_vs_plain"] <= 1e-5 and stage["tokens_per_s"] > 0
    assert stage["resume"]["deterministic"] and stage["resume"]["loss_diff_before_kill"] == 0.0  # CPU: exact
    # the loop ran the new loss path; on CPU attention stays SDPA (flex attention has no CPU backward)
    assert (stage["loss_path"], stage["attention"]) == ("chunked", "sdpa")
    assert stage["flops_per_token"]["total"] < stage["flops_per_token"]["classic_6n"] and result["mfu_formula"]


def test_gpu_check_throughput_only_with_the_paper_settings_on_cpu(tmp_path):
    """The plain run alone, unpacked, gradient checkpointing, the old loss path: figures for each, MFU from a peak."""
    done = _run(tmp_path, "--tiny", "--throughput-only", "--no-packing", "--gradient-checkpointing",
                "--loss-path", "reference", "--peak-flops", "1e12", "--pad-to-multiple-of", "8")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    result = json.loads((tmp_path / "gpu_check_tiny.json").read_text())
    stage = result["stages"]["zero2"]
    assert result["ok"] and stage["checks"] == {"run_finished": True, "each_step_logged_once": True}
    assert result["settings"]["packing"] is False and result["settings"]["gradient_checkpointing"] is True
    assert result["settings"]["pad_to_multiple_of"] == 8
    # the reference path runs the (tied) head on every token: its FLOPs are the classic 6N + attention
    assert stage["loss_path"] == "reference" and stage["tokens_per_s"] > 0
    assert stage["mfu"] == stage["mfu_classic_6n"] > 0
    flops = stage["flops_per_token"]
    assert flops["head"] == 6 * result["model_shape"]["hidden_size"] * result["model_shape"]["vocab_size"]


def test_flops_per_token_counts_the_head_where_it_runs_and_attention_per_example(bench_script):
    flops = bench_script("flops")
    shape = {"vocab_size": 100, "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 2,
             "num_attention_heads": 2, "num_key_value_heads": 1, "tie_word_embeddings": True}
    n = flops.parameters(shape)
    chunked = flops.flops_per_token(shape, [10, 30], [5, 10], "chunked")
    reference = flops.flops_per_token(shape, [10, 30], [5, 10], "reference")
    assert chunked["attention_length"] == (10 ** 2 + 30 ** 2) / 40 == 25.0  # not the mean length, 20
    assert chunked["attention"] == 12 * 2 * 8 * 25.0 and chunked["loss_fraction"] == 15 / 40
    assert chunked["dense"] == 6 * (n - 100 * 8) and chunked["head"] == 6 * 8 * 100 * 15 / 40
    assert reference["head"] == 6 * 8 * 100 and reference["total"] == reference["classic_6n"] == 6 * n + 12 * 2 * 8 * 25


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_check_on_gpus(tmp_path):
    done = _run(tmp_path)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert set(result["stages"]) == {"zero1", "zero2", "zero3"} and result["ok"]


def _gpu_check_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "bench" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _losses(values):
    return [{"step": i + 1, "loss": v} for i, v in enumerate(values)]


def test_resume_verdict_on_hand_made_runs():
    verdict = _gpu_check_module().resume_verdict
    plain = _losses([12.0, 11.9, 11.8, 11.7])
    # deterministic device: losses equal up to the kill, so the weights decide
    same = verdict(plain, plain, 2, 0.0, 1e-5, 4.0)
    assert same["deterministic"] and same["ok"] and same["loss_diff_before_kill"] == 0.0
    assert not verdict(plain, plain, 2, 2e-5, 1e-5, 4.0)["ok"]
    # non-deterministic device: noise 1e-3 before the kill; 3e-3 after is within 4x, 5e-3 is not
    noisy = _losses([12.0, 11.901, 11.803, 11.7])
    result = verdict(noisy, plain, 2, 2e-4, 1e-5, 4.0)
    assert not result["deterministic"] and result["ok"]
    assert abs(result["loss_diff_before_kill"] - 1e-3) < 1e-9 and abs(result["loss_diff_after_resume"] - 3e-3) < 1e-9
    assert not verdict(_losses([12.0, 11.901, 11.805, 11.7]), plain, 2, 2e-4, 1e-5, 4.0)["ok"]
    # a resume that replays other batches: losses after it move by the spread between batches
    assert not verdict(_losses([12.0, 11.901, 11.7, 11.8]), plain, 2, 2e-4, 1e-5, 4.0)["ok"]
    # nothing after the kill to compare is not a pass
    assert not verdict(noisy[:2], plain[:2], 2, 0.0, 1e-5, 4.0)["ok"]


def test_recorded_h100_run_rechecks(tmp_path):
    """The kept metrics of the H100 run (bench/results/gpu_check_h100) give the verdicts recorded in bench/RESULTS.md."""
    import shutil

    kept = tmp_path / "kept"
    shutil.copytree(REPO / "bench" / "results" / "gpu_check_h100", kept)
    verdicts = _gpu_check_module().recheck(kept, 4.0)
    assert set(verdicts) == {"zero1", "zero2", "zero3"}
    assert all(v["ok"] and not v["deterministic"] for v in verdicts.values())
    assert verdicts == json.loads((REPO / "bench" / "results" / "gpu_check_h100" / "verdicts.json").read_text())
