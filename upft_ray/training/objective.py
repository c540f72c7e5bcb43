"""The SFT objective: next-token NLL on response tokens, normalised over the whole global batch.

``loss_normalization``:
- ``example`` (default): each example's mean token NLL, averaged over the examples of the global
  batch, as the official UPFT trainer does (micro-batch 1, per-sequence token mean, accumulated): a
  prefix example (t tokens + EOS) then weighs as much as a full solution of hundreds of tokens, so
  the p share of full solutions carries about p of the gradient.
- ``token``: the sum of every loss token's NLL in the global batch divided by the number of loss
  tokens in it; the rare long full solutions then carry most of the gradient (64-87% in the paper's
  settings).

Both are the same number whatever the micro-batch size, packing, gradient accumulation or world size
(a per-micro-batch mean would weight tokens by how they happened to be grouped).

Every rank knows the global batch from the deterministic plan, so the normaliser needs no
communication; the loss given to DeepSpeed is scaled by world x accumulation because DeepSpeed
divides by accumulation steps and averages gradients over ranks.
"""

from __future__ import annotations

import numpy as np

from upft_ray.training.packing import IGNORE_INDEX, ExampleStore


def global_normaliser(step_rows: list[list[int]], store: ExampleStore, mode: str) -> float:
    """Return the loss tokens (``token``) or examples (``example``) of one optimizer step's rows."""
    examples = np.fromiter((i for row in step_rows for i in row), dtype=np.int64)
    if mode == "token":
        return float(store.loss_tokens[examples].sum())
    return float(len(examples))


def forward_logits(model, input_ids, position_ids):
    """Return the logits of a (packed) micro-batch.

    No attention mask and no KV cache: transformers then derives a block-diagonal causal mask from
    the restarting position ids, so packed examples never attend to one another (with a cache it
    would silently fall back to one causal mask over the whole row)."""
    return model(input_ids=input_ids, position_ids=position_ids, use_cache=False).logits


def summed_loss(logits, labels, example_ids, mode: str):
    """Return this micro-batch's share of the global loss numerator (a scalar tensor with gradient).

    ``token``: the sum of NLL over loss tokens. ``example``: the sum over examples of their mean NLL."""
    import torch  # heavy: loaded when used
    import torch.nn.functional as F  # heavy: loaded when used

    targets = labels[:, 1:]
    nll = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                          ignore_index=IGNORE_INDEX, reduction="none")
    valid = targets.reshape(-1) != IGNORE_INDEX
    if mode == "token":
        return nll[valid].sum()
    ids = example_ids[:, 1:].reshape(-1)[valid]
    count = int(example_ids.max()) + 1
    sums = torch.zeros(count, dtype=nll.dtype, device=nll.device).index_add_(0, ids, nll[valid])
    tokens = torch.bincount(ids, minlength=count).to(nll.dtype)
    return (sums[tokens > 0] / tokens[tokens > 0]).sum()
