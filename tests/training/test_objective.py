"""The trainer computes the right loss: packed = unpacked, and equal to a plain transformers forward."""

import numpy as np
import pytest
import torch

from upft_ray.training.objective import forward_logits, global_normaliser, summed_loss
from upft_ray.training.packing import ExampleStore, collate_rows


@pytest.fixture(scope="module")
def tiny_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def store():
    rng = np.random.default_rng(0)
    examples = [(rng.integers(1, 64, size=n).tolist(), p) for n, p in [(12, 8), (7, 5), (20, 9), (5, 4), (9, 6)]]
    lengths = [len(ids) for ids, _ in examples]
    return ExampleStore(np.array([t for ids, _ in examples for t in ids]),
                        np.concatenate([[0], np.cumsum(lengths)]), np.array([p for _, p in examples]))


def _loss(model, rows, store, mode, micro):
    """The global loss of ``rows`` fed ``micro`` rows at a time (what the training loop computes)."""
    normaliser = global_normaliser(rows, store, mode)
    total = 0.0
    for start in range(0, len(rows), micro):
        ids, pos, labels, ex = collate_rows(rows[start:start + micro], store, pad_id=0)
        with torch.no_grad():
            total += float(summed_loss(forward_logits(model, ids, pos), labels, ex, mode))
    return total / normaliser


@pytest.mark.parametrize("mode", ["token", "example"])
def test_packing_gives_the_loss_of_the_unpacked_batch(tiny_model, store, mode):
    unpacked = _loss(tiny_model, [[0], [1], [2], [3], [4]], store, mode, micro=2)
    packed = _loss(tiny_model, [[0, 1, 3], [2, 4]], store, mode, micro=2)
    one_row = _loss(tiny_model, [[4, 2, 1, 0, 3]], store, mode, micro=1)
    assert abs(packed - unpacked) < 1e-5 and abs(one_row - unpacked) < 1e-5


def test_token_loss_matches_a_plain_transformers_forward(tiny_model, store):
    rows = [[0], [1], [2], [3], [4]]
    width = int(store.lengths.max())
    ids = torch.zeros((5, width), dtype=torch.long)
    mask = torch.zeros((5, width), dtype=torch.long)
    labels = torch.full((5, width), -100)
    for b, (i,) in enumerate(rows):
        seq = torch.tensor(store.tokens[store.offsets[i]:store.offsets[i + 1]])
        ids[b, :len(seq)], mask[b, :len(seq)] = seq, 1
        labels[b, store.num_prompt[i]:len(seq)] = seq[store.num_prompt[i]:]
    with torch.no_grad():
        reference = float(tiny_model(input_ids=ids, attention_mask=mask, labels=labels).loss)
    assert abs(_loss(tiny_model, rows, store, "token", micro=5) - reference) < 1e-5
    assert abs(_loss(tiny_model, [[0, 1, 2, 3, 4]], store, "token", micro=1) - reference) < 1e-5


def test_example_loss_is_the_mean_of_example_means(tiny_model, store):
    means = []
    for i in range(5):
        seq = torch.tensor(store.tokens[store.offsets[i]:store.offsets[i + 1]])[None]
        labels = seq.clone()
        labels[0, :store.num_prompt[i]] = -100
        with torch.no_grad():
            means.append(float(tiny_model(input_ids=seq, labels=labels).loss))
    assert abs(_loss(tiny_model, [[0, 1], [2, 3, 4]], store, "example", micro=2) - np.mean(means)) < 1e-5


def test_gradients_of_packed_and_unpacked_batches_agree(tiny_model, store):
    grads = []
    for rows in ([[0], [1], [2], [3], [4]], [[0, 1, 2, 3, 4]]):
        tiny_model.zero_grad()
        ids, pos, labels, ex = collate_rows(rows, store, pad_id=0)
        loss = summed_loss(forward_logits(tiny_model, ids, pos), labels, ex, "token")
        (loss / global_normaliser(rows, store, "token")).backward()
        grads.append(torch.cat([p.grad.flatten() for p in tiny_model.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)
