"""The streaming HF export equals DeepSpeed's own consolidation, shards, casts, reloads, and holds no model."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from loop_helpers import synthetic, torchrun_zero2  # noqa: F401 (fixtures)
from safetensors.torch import load_file

from upft_ray.config import TrainConfig
from upft_ray.training import export
from upft_ray.training.export import export_hf_checkpoint, resolve_export_dtype
from upft_ray.training.harness_torch import latest_checkpoint


def _reference(ckpt):
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    return get_fp32_state_dict_from_zero_checkpoint(str(latest_checkpoint(ckpt)))


def _load_dir(out):
    weights = {}
    for shard in sorted(out.glob("*.safetensors")):
        weights.update(load_file(str(shard)))
    return weights


def test_sharded_chunked_export_equals_deepspeeds_consolidation_and_reloads(torchrun_zero2, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    cfg, ckpt, _ = torchrun_zero2
    monkeypatch.setattr(export, "CHUNK_ELEMENTS", 1000)  # many chunks per tensor, page releases in between
    out = export_hf_checkpoint(latest_checkpoint(ckpt), cfg.model_path, tmp_path / "final",
                               max_shard_bytes=100_000)
    reference, mine = _reference(ckpt), _load_dir(out)
    assert len(list(out.glob("*.safetensors"))) > 1
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(mine)
    assert set(mine) == set(reference) - {"lm_head.weight"}  # tied to the embedding, as save_pretrained writes it
    for name, tensor in mine.items():
        assert tensor.dtype == torch.float32 and torch.equal(tensor, reference[name]), name
    model = AutoModelForCausalLM.from_pretrained(out)
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in mine.items())
    assert torch.equal(state["lm_head.weight"], mine["model.embed_tokens.weight"])


def test_bfloat16_export_is_the_fp32_weights_rounded(torchrun_zero2, tmp_path):
    cfg, ckpt, _ = torchrun_zero2
    out = export_hf_checkpoint(latest_checkpoint(ckpt), cfg.model_path, tmp_path / "bf16", "bfloat16")
    reference, mine = _reference(ckpt), _load_dir(out)
    assert all(t.dtype == torch.bfloat16 and torch.equal(t, reference[k].to(torch.bfloat16)) for k, t in mine.items())
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"


def test_every_zero_stage_exports_the_fp32_master_weights_in_either_precision(tmp_path):
    """ZeRO 0-3 x fp32/bf16, a step at a learning rate bf16 rounds mostly away: the float32 export holds exactly the
    engine's fp32 weights. In bf16 those are the optimizer's master copy, not the bf16 module (ZeRO-0 exported the
    module's, the update rounded away, until its optimizer state was read: the probe counts the rounded values)."""
    done = subprocess.run([sys.executable, str(Path(__file__).parent / "export_probe.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    cases = json.loads(done.stdout.strip().splitlines()[-1])
    assert [(c["stage"], c["precision"]) for c in cases] == [(s, p) for s in (0, 1, 2, 3) for p in ("fp32", "bf16")]
    assert all(c["error"] is None and c["exact"] for c in cases), cases
    assert all(c["rounded_in_module"] > 0 for c in cases if c["precision"] == "bf16" and c["stage"] < 3), cases


def test_zero0_master_weights_that_do_not_fit_the_module_are_refused(tmp_path):
    module = {"a.weight": torch.ones(2, 3, dtype=torch.bfloat16), "b.bias": torch.zeros(4, dtype=torch.bfloat16)}
    states = {"module": module, "buffer_names": [], "optimizer": {"fp32_groups": [[torch.ones(6), torch.zeros(3)]]}}
    with pytest.raises(RuntimeError, match="hold 9 values, the module 10"):
        export._zero0_masters(states, tmp_path)
    states["optimizer"] = {"fp32_groups_flat": [torch.cat([torch.zeros(4), torch.ones(6)])]}  # the order swapped
    with pytest.raises(RuntimeError, match="do not match the module's a.weight"):
        export._zero0_masters(states, tmp_path)
    states["optimizer"] = {"fp32_groups_flat": [torch.cat([torch.full((6,), 1.001), torch.zeros(4)])]}
    masters = export._zero0_masters(states, tmp_path)
    assert torch.equal(torch.cat(list(masters["a.weight"][1]())), torch.full((6,), 1.001))
    assert export._zero0_masters({"module": module, "buffer_names": [], "optimizer": {"state": {}}}, tmp_path) == {}
    empty = {"module": {"e": torch.ones(0, dtype=torch.bfloat16), **module}, "buffer_names": [],  # a 0-size one
             "optimizer": {"fp32_groups": [[torch.ones(0), torch.ones(6), torch.zeros(4)]]}}
    assert list(export._zero0_masters(empty, tmp_path)) == ["e", "a.weight", "b.bias"]


def test_export_refuses_a_model_of_another_shape(torchrun_zero2, tmp_path):
    from synthetic import TINY_QWEN2, write_random_model

    _, ckpt, _ = torchrun_zero2
    other = write_random_model(tmp_path / "other", {**TINY_QWEN2, "num_hidden_layers": 3})
    with pytest.raises(RuntimeError, match="does not match"):
        export_hf_checkpoint(latest_checkpoint(ckpt), str(other), tmp_path / "out")


def test_page_release_keeps_values_of_mapped_and_anonymous_tensors(tmp_path):
    values = torch.arange(1 << 20, dtype=torch.float32)
    torch.save({"x": values}, tmp_path / "t.pt")
    mapped = torch.load(tmp_path / "t.pt", mmap=True, weights_only=True)["x"]
    assert float(mapped.sum()) == float(values.sum())
    export._release(mapped)  # dropped pages are read again from the file
    assert torch.equal(mapped, values)
    anonymous = values.clone()
    export._release(anonymous)  # anonymous memory would be zeroed: it must be left alone
    assert torch.equal(anonymous, values)
    assert np.array_equal(anonymous.numpy(), values.numpy())


def test_export_dtype_auto_is_bf16_on_gpus_only():
    assert resolve_export_dtype(TrainConfig(export_dtype="auto", use_gpu=True)) == "bfloat16"
    assert resolve_export_dtype(TrainConfig(export_dtype="auto", use_gpu=False)) == "float32"
    assert resolve_export_dtype(TrainConfig(export_dtype="float32", use_gpu=True)) == "float32"
