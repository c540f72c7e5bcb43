"""Packed rows under flex attention (a block mask from the restarting position ids, no dense mask) give the
loss SDPA gives; flex attention is chosen only for packed rows on GPUs where it runs (CPU: no backward)."""

import numpy as np
import pytest
import torch

from upft_ray.training.attention import flex_attention_runs, packed_attention
from upft_ray.training.objective import micro_batch_loss
from upft_ray.training.packing import ExampleStore, collate_rows


@pytest.fixture(scope="module")
def store():
    rng = np.random.default_rng(0)
    shapes = [(12, 8), (7, 5), (20, 9), (5, 5), (9, 6), (30, 4)]
    examples = [(rng.integers(1, 64, size=n).tolist(), p) for n, p in shapes]
    lengths = [len(ids) for ids, _ in examples]
    return ExampleStore(np.array([t for ids, _ in examples for t in ids]),
                        np.concatenate([[0], np.cumsum(lengths)]), np.array([p for _, p in examples]))


@pytest.mark.parametrize("mode", ["token", "example"])
def test_flex_attention_on_packed_rows_gives_the_sdpa_loss(store, mode):
    """Forward only: flex attention has no backward on CPU (its gradients are checked on GPUs by bench/gpu_check)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2)).eval()
    losses, layouts = {}, ([[0, 1, 3], [2, 4, 5]], [[5, 4, 3, 2, 1, 0]], [[i] for i in range(6)])
    for implementation in ("sdpa", "flex_attention"):
        model.set_attn_implementation(implementation)
        with torch.no_grad():
            losses[implementation] = [float(micro_batch_loss(model, collate_rows(rows, store, 0), mode, "cpu"))
                                      for rows in layouts]
    for flex, sdpa in zip(losses["flex_attention"], losses["sdpa"]):
        assert abs(flex - sdpa) <= 1e-5 * abs(sdpa)
    assert abs(losses["flex_attention"][0] - losses["flex_attention"][2]) <= 1e-5 * losses["flex_attention"][2]


def test_flex_attention_is_chosen_only_for_packed_rows_on_gpus_where_it_runs(monkeypatch):
    import upft_ray.training.attention as attention

    assert packed_attention(False, True, torch.device("cpu")) is None
    monkeypatch.setattr(attention, "flex_attention_runs", lambda device: True)
    assert packed_attention(True, True, "cuda:0") == "flex_attention"
    assert packed_attention(True, False, "cuda:0") is None  # one example per row: the causal mask is enough
    monkeypatch.setenv("UPFT_ATTENTION", "sdpa")
    assert packed_attention(True, True, "cuda:0") is None
    monkeypatch.delenv("UPFT_ATTENTION")
    monkeypatch.setattr(attention, "flex_attention_runs", lambda device: False)
    assert packed_attention(True, True, "cuda:0") is None  # the fallback: the model's default attention


def test_flex_attention_probe_says_no_on_cpu_and_names_why(caplog):
    with caplog.at_level("WARNING", logger="upft.train"):
        assert flex_attention_runs(torch.device("cpu")) is False
    assert "flex attention does not run on cpu" in caplog.text
