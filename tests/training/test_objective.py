"""The trainer computes the right loss: packed = unpacked, and equal to a plain transformers forward."""

import numpy as np
import pytest
import torch

from upft_ray.training.objective import forward_logits, global_normaliser, summed_loss
from upft_ray.training.packing import IGNORE_INDEX, ExampleStore, collate_rows


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


# The chunked path (the loop's default): LM head and cross-entropy on loss positions only, in chunks.

from upft_ray.training.objective import chunked_loss_supported, loss_positions, micro_batch_loss  # noqa: E402

LAYOUTS = {"unpacked": [[0], [1], [2], [3], [4]], "packed": [[0, 1, 3], [2, 4]], "one_row": [[4, 2, 1, 0, 3]]}


@pytest.fixture(scope="module")
def smollm2_tiny(tiny_model_dir):
    """The shared tiny model (2-layer Llama, SmolLM2's 49,152-token vocabulary, tied embeddings), fp32."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def big_store(smollm2_tiny):
    """Examples over the tiny model's vocabulary; example 3 has no loss token, example 2 has 11 of them."""
    rng = np.random.default_rng(1)
    vocab = smollm2_tiny.config.vocab_size
    shapes = [(12, 8), (7, 5), (20, 9), (5, 5), (9, 6)]
    examples = [(rng.integers(1, vocab, size=n).tolist(), p) for n, p in shapes]
    lengths = [len(ids) for ids, _ in examples]
    return ExampleStore(np.array([t for ids, _ in examples for t in ids]),
                        np.concatenate([[0], np.cumsum(lengths)]), np.array([p for _, p in examples]))


def _loss_and_grads(model, rows, store, mode, path, chunk_rows=None, multiple=1):
    """(global loss, flat gradient) of ``rows`` in one micro-batch through ``micro_batch_loss``."""
    model.zero_grad(set_to_none=True)
    batch = collate_rows(rows, store, pad_id=0, multiple=multiple)
    loss = micro_batch_loss(model, batch, mode, "cpu", path, chunk_rows, multiple) / global_normaliser(rows, store, mode)
    loss.backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters()])
    return float(loss.detach()), grads


def _relative(a, b):
    return float((a - b).norm() / b.norm()) if isinstance(a, torch.Tensor) else abs(a - b) / abs(b)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("mode", ["token", "example"])
@pytest.mark.parametrize("chunk_rows", [3, 7, None])  # 3 and 7 split examples' loss positions across chunks
def test_chunked_loss_gives_the_reference_loss_and_gradients(smollm2_tiny, big_store, mode, layout, chunk_rows):
    rows = LAYOUTS[layout]
    ref_loss, ref_grads = _loss_and_grads(smollm2_tiny, rows, big_store, mode, "reference")
    loss, grads = _loss_and_grads(smollm2_tiny, rows, big_store, mode, "chunked", chunk_rows)
    assert _relative(loss, ref_loss) <= 1e-5 and _relative(grads, ref_grads) <= 1e-5
    assert torch.allclose(grads, ref_grads, rtol=1e-5, atol=1e-5 * float(ref_grads.abs().max()))


@pytest.mark.parametrize("mode", ["token", "example"])
def test_chunked_loss_of_packed_rows_equals_unpacked_rows(smollm2_tiny, big_store, mode):
    unpacked = _loss_and_grads(smollm2_tiny, LAYOUTS["unpacked"], big_store, mode, "chunked", 4)
    for layout in ("packed", "one_row"):
        packed = _loss_and_grads(smollm2_tiny, LAYOUTS[layout], big_store, mode, "chunked", 4)
        assert _relative(packed[0], unpacked[0]) <= 1e-5 and _relative(packed[1], unpacked[1]) <= 1e-5


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("mode", ["token", "example"])
@pytest.mark.parametrize("path", ["chunked", "reference"])
def test_shapes_padded_to_a_multiple_give_the_loss_and_gradients_of_unpadded_ones(smollm2_tiny, big_store, mode,
                                                                                  layout, path):
    """``train.pad_to_multiple_of``: the width padded (a segment of its own, without loss) and the loss positions
    padded (target IGNORE_INDEX) change nothing but the shapes, chunks cut across the padding included."""
    exact = _loss_and_grads(smollm2_tiny, LAYOUTS[layout], big_store, mode, path, 5)
    for multiple in (8, 64):
        padded = _loss_and_grads(smollm2_tiny, LAYOUTS[layout], big_store, mode, path, 5, multiple)
        assert _relative(padded[0], exact[0]) <= 1e-5 and _relative(padded[1], exact[1]) <= 1e-5


def test_padding_rounds_the_width_and_the_loss_positions_up_to_the_multiple(big_store):
    rows = LAYOUTS["packed"]
    exact = collate_rows(rows, big_store, pad_id=0)
    padded = collate_rows(rows, big_store, pad_id=0, multiple=16)
    assert exact[0].shape[1] % 16 and padded[0].shape[1] == -(-exact[0].shape[1] // 16) * 16
    assert torch.equal(padded[0][:, :exact[0].shape[1]], exact[0])
    assert (padded[2][:, exact[0].shape[1]:] == IGNORE_INDEX).all() and (padded[3][:, exact[0].shape[1]:] == -1).all()
    positions, targets, weights = loss_positions(exact[2], exact[3], "example")
    padded_positions, padded_targets, padded_weights = loss_positions(exact[2], exact[3], "example", 16)
    n = len(positions)
    assert n % 16 and len(padded_positions) == len(padded_targets) == len(padded_weights) == -(-n // 16) * 16
    assert torch.equal(padded_positions[:n], positions) and torch.equal(padded_targets[:n], targets)
    assert (padded_targets[n:] == IGNORE_INDEX).all() and not padded_weights[n:].any()
    assert torch.equal(padded_weights[:n], weights)
    assert loss_positions(exact[2], exact[3], "token", 16)[2] is None


@pytest.mark.parametrize("mode", ["token", "example"])
def test_a_micro_batch_without_loss_tokens_is_a_zero_with_zero_gradients(smollm2_tiny, big_store, mode):
    """Example 3 is all prompt: the loss is 0, and every parameter (the LM head included) gets a zero gradient,
    not None, as on the reference path (ZeRO reduces every parameter's gradient)."""
    batch = collate_rows([[3]], big_store, pad_id=0)
    smollm2_tiny.zero_grad(set_to_none=True)
    loss = micro_batch_loss(smollm2_tiny, batch, mode, "cpu", "chunked")
    loss.backward()
    assert float(loss.detach()) == 0.0
    assert all(p.grad is not None and not p.grad.any() for p in smollm2_tiny.parameters())


def test_chunked_loss_without_gradients_matches_the_reference(smollm2_tiny, big_store):
    batch = collate_rows(LAYOUTS["packed"], big_store, pad_id=0)
    with torch.no_grad():
        losses = [float(micro_batch_loss(smollm2_tiny, batch, "example", "cpu", path, 3))
                  for path in ("reference", "chunked")]
    assert _relative(losses[1], losses[0]) <= 1e-5


@pytest.mark.parametrize("mode", ["token", "example"])
def test_chunked_loss_on_qwen2_with_an_untied_head_with_bias(store, mode):
    """Qwen2 (the paper's models) with an untied LM head, here with a bias: its weight and bias get the
    reference gradients."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False))
    model.lm_head = torch.nn.Linear(32, 64, bias=True)
    assert chunked_loss_supported(model)
    rows = [[0, 1], [2, 3, 4]]
    reference = _loss_and_grads(model, rows, store, mode, "reference")
    chunked = _loss_and_grads(model, rows, store, mode, "chunked", 5)
    assert _relative(chunked[0], reference[0]) <= 1e-5 and _relative(chunked[1], reference[1]) <= 1e-5


def test_other_architectures_and_transforms_around_the_head_use_the_reference_path(tiny_model):
    assert chunked_loss_supported(tiny_model)
    tiny_model.config.final_logit_softcapping = 30.0  # Gemma 2: tanh soft-capping after the LM head
    try:
        assert not chunked_loss_supported(tiny_model)
    finally:
        del tiny_model.config.final_logit_softcapping
    assert chunked_loss_supported(tiny_model)
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=16, n_layer=1, n_head=2))
    assert not chunked_loss_supported(gpt2)  # not a listed architecture: the reference path
    with pytest.raises(ValueError, match="loss path 'fast'"):
        micro_batch_loss(tiny_model, None, "token", "cpu", "fast")
