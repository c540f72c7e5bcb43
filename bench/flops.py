"""Training FLOPs per token of a Qwen2-shaped causal LM, for MFU (bench/gpu_check.py) and the loss-path bench.

Per real (non-padding) token of a training step, forward + backward = 3x the forward's matmuls:

- ``dense``: 6 x (N - E), N every parameter, E the embedding matrix V x H (counted once when the LM head is
  tied to it, twice when not): the matmuls of every layer;
- ``head``: 6 x H x V on the tokens whose logits are computed: every token on the ``reference`` loss path,
  only the tokens that carry loss on the ``chunked`` one (its recompute of each chunk in backward is not
  counted: MFU counts the work the model needs, not what an implementation repeats);
- ``attention``: 12 x L x H x s_eff with s_eff = sum(s_i^2) / sum(s_i) over the examples' lengths s_i: a
  packed example attends only to itself, so a token of an s-token example attends over s keys (the PaLM
  formula, 12 L H s, with s per example; the causal half is not discounted, as there).

``classic_6n``: 6N + the same attention, the usual formula (the LM head on every token).
"""

from __future__ import annotations


def parameters(shape: dict) -> int:
    """Return the parameter count of a Qwen2 causal LM of ``shape`` (built on the meta device: no memory)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    with torch.device("meta"):
        return sum(t.numel() for t in Qwen2ForCausalLM(Qwen2Config(**shape)).parameters())


def flops_per_token(shape: dict, lengths, loss_tokens, loss_path: str = "chunked") -> dict:
    """Return the training FLOPs per real token (``total``, its parts, ``classic_6n``) of a Qwen2 of ``shape``
    on examples of ``lengths`` tokens of which ``loss_tokens`` carry loss (see the module docstring)."""
    import numpy as np

    lengths, loss_tokens = np.asarray(lengths, dtype=np.float64), np.asarray(loss_tokens, dtype=np.float64)
    n, hidden, vocab = parameters(shape), shape["hidden_size"], shape["vocab_size"]
    embedding = vocab * hidden * (1 if shape.get("tie_word_embeddings", True) else 2)
    loss_fraction = float(loss_tokens.sum() / lengths.sum())
    s_eff = float((lengths ** 2).sum() / lengths.sum())
    attention = 12 * shape["num_hidden_layers"] * hidden * s_eff
    head = 6 * hidden * vocab * (loss_fraction if loss_path == "chunked" else 1.0)
    dense = 6 * (n - embedding)
    return {"parameters": n, "loss_fraction": loss_fraction, "attention_length": s_eff, "dense": dense,
            "head": head, "attention": attention, "total": dense + head + attention,
            "classic_6n": 6 * n + attention, "loss_path": loss_path}
