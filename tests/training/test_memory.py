"""What training keeps in device memory: the ZeRO stage and offload ``auto`` picks from the model's size and
the GPU's memory, and selective activation checkpointing (same loss and gradients as none, and no matmul
computed twice, where full checkpointing recomputes every one)."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from upft_ray.config import TrainConfig, load_config
from upft_ray.config.errors import ConfigError
from upft_ray.training.loop import deepspeed_config
from upft_ray.training.memory import STATE_SHARE, enable_checkpointing, plan_memory, state_bytes

GIB = 2**30
H100 = 80 * GIB


def test_state_bytes_follow_what_each_zero_stage_shards():
    n, world = 1_000, 4
    # bf16: weights 2 + gradients 2 + optimizer 16 (fp32 master, fp32 gradient partition, two moments)
    assert state_bytes(n, 1, 1, bf16=True, offload=False) == 20 * n
    assert state_bytes(n, world, 1, bf16=True, offload=False) == 2 * n + 2 * n + 16 * n // world
    assert state_bytes(n, world, 2, bf16=True, offload=False) == 2 * n + (2 + 16) * n // world
    assert state_bytes(n, world, 3, bf16=True, offload=False) == 20 * n // world
    assert state_bytes(n, world, 3, bf16=True, offload=True) == 4 * n // world  # the optimizer's part on the host
    assert state_bytes(n, 1, 0, bf16=False, offload=False) == 16 * n  # fp32: 4 + 4 + the two moments


@pytest.mark.parametrize("params, gpus, expected", [
    (494_000_000, 1, (1, False)),  # 0.5B on one H100: ZeRO-1, all on the GPU
    (7_600_000_000, 1, (1, True)),  # 7B alone: 152 GB of state does not fit; offload leaves 30 GB
    (7_600_000_000, 8, (2, False)),  # 7B on 8: ZeRO-2 shards enough
    (70_000_000_000, 8, (3, True)),  # 70B on 8: only ZeRO-3 with offload fits
])
def test_auto_takes_the_first_plan_that_fits_the_gpu(params, gpus, expected):
    plan = plan_memory("auto", "auto", gpus, params, H100, bf16=True)
    assert (plan.zero_stage, plan.offload) == expected
    assert plan.state_bytes <= STATE_SHARE * H100 and "fits" in plan.why


def test_a_setting_given_by_hand_is_kept_and_nothing_fitting_says_so():
    assert (plan_memory(3, False, 8, 70_000_000_000, H100).zero_stage, plan_memory(3, False, 8, 1, H100).offload) \
        == (3, False)
    assert plan_memory(2, "auto", 8, 70_000_000_000, H100).offload is True  # offload auto, the stage kept
    assert plan_memory(0, "auto", 1, 70_000_000_000, H100).offload is False  # offload needs a ZeRO stage
    huge = plan_memory("auto", "auto", 1, 1_000_000_000_000, H100)
    assert (huge.zero_stage, huge.offload) == (1, True) and "no plan fits" in huge.why


def test_cpu_runs_keep_their_stage_and_never_offload():
    plans = [plan_memory("auto", "auto", world) for world in (1, 2)]
    assert [(p.zero_stage, p.offload) for p in plans] == [(1, False), (2, False)] and "CPU" in plans[0].why
    config = deepspeed_config(TrainConfig(offload_optimizer="auto", zero_stage="auto"), 2, "fp32")
    assert config["zero_optimization"] == {"stage": 2} and config["optimizer"]["params"]["torch_adam"] is True


def test_the_plan_decides_the_deepspeed_config():
    offloaded = plan_memory("auto", "auto", 1, 7_600_000_000, H100)
    config = deepspeed_config(TrainConfig(use_gpu=True, offload_optimizer="auto"), 1, "bf16", offloaded)
    assert config["zero_optimization"] == {"stage": 1, "offload_optimizer": {"device": "cpu", "pin_memory": True}}
    params = config["optimizer"]["params"]
    assert params["torch_adam"] is False and "fused" not in params  # DeepSpeed's CPU Adam runs the step


def test_config_accepts_auto_offload_and_selective_checkpointing_and_names_bad_values():
    cfg = load_config(None, ["train.offload_optimizer=auto", "train.gradient_checkpointing=selective"])
    assert (cfg.train.offload_optimizer, cfg.train.gradient_checkpointing) == ("auto", "selective")
    assert load_config(None, ["train.gradient_checkpointing=true"]).train.gradient_checkpointing is True
    for bad in ("train.gradient_checkpointing=some", "train.offload_optimizer=maybe"):
        with pytest.raises(ConfigError, match=bad.split("=")[0].split(".")[1]):
            load_config(None, [bad])


class CountMatmuls(TorchDispatchMode):
    """Counts aten matmuls while active."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in (torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default):
            self.count += 1
        return func(*args, **(kwargs or {}))


def _loss_grads_and_backward_matmuls(mode) -> tuple[float, dict, int]:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                         num_attention_heads=4, num_key_value_heads=2, attn_implementation="sdpa"))
    enable_checkpointing(model, mode)
    model.train()
    ids = torch.randint(0, 97, (2, 24), generator=torch.Generator().manual_seed(1))
    loss = model(input_ids=ids, labels=ids).loss
    with CountMatmuls() as counted:
        loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}, counted.count


def test_selective_checkpointing_gives_the_same_gradients_and_recomputes_no_matmul():
    loss, grads, matmuls = _loss_grads_and_backward_matmuls(False)
    for mode in (True, "selective"):
        other_loss, other_grads, other_matmuls = _loss_grads_and_backward_matmuls(mode)
        assert abs(other_loss - loss) <= 1e-6 * abs(loss)
        for name, grad in grads.items():
            assert torch.allclose(other_grads[name], grad, rtol=1e-5, atol=1e-7), (mode, name)
        if mode == "selective":
            assert other_matmuls == matmuls  # the forward's matmul outputs were kept, not recomputed
        else:
            assert other_matmuls > matmuls  # full checkpointing runs each layer's forward again
