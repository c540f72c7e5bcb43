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

Two ways to compute it, the same number up to floating-point summation order:
- ``chunked`` (the loop's default, :func:`micro_batch_loss`): the model runs without its LM head (its
  final hidden states come back as an output of the forward, so DeepSpeed's backward hooks still see
  them), the positions whose next token carries loss are picked on the host, and the LM head and an
  fp32 cross-entropy run on those positions only, a chunk of rows at a time, each chunk recomputed in
  backward: full-vocabulary logits exist for one chunk at a time, never for every token. UPFT rows
  are mostly prompt tokens without loss, and the LM head is a quarter of a 0.5B model's FLOPs.
- ``reference`` (:func:`forward_logits` + :func:`summed_loss`): logits for every position over the
  whole vocabulary, upcast to fp32. Kept for tests, the benchmark, and models the chunked path does not
  support (:func:`chunked_loss_supported`: an architecture not known to apply a plain LM head to its last
  hidden state, or a transform around the head).
"""

from __future__ import annotations

import inspect

import numpy as np

from upft_ray.training.packing import IGNORE_INDEX, ExampleStore

LOSS_PATHS = ("chunked", "reference")
CHUNK_LOGITS = 1 << 27  # logits per chunk (128M: 512 MiB in fp32, whatever the vocabulary)
# Architectures whose causal-LM forward applies its LM head, as is, to the last hidden state that
# ``output_hidden_states`` returns (Llama and SmolLM2, Qwen2 and Qwen2.5, Qwen3, Mistral): others keep the
# reference path rather than risk a head applied to the wrong states or a transform after it.
CHUNKED_MODEL_TYPES = ("llama", "qwen2", "qwen3", "mistral")
# Config attributes of transforms around the LM head (Gemma 2 soft-capping, Cohere and Granite logit
# scaling, Falcon-H1's head multiplier): set on a listed architecture (a custom config), they also mean
# the reference path.
_AROUND_HEAD = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale",
                "lm_head_multiplier")


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


def _unwrapped(model):
    """Return the transformers model inside a DeepSpeed engine (or ``model`` itself)."""
    return getattr(model, "module", model)


def chunked_loss_supported(model) -> bool:
    """Return whether ``model`` (or the model inside a DeepSpeed engine) can use the chunked loss: one of
    CHUNKED_MODEL_TYPES, a linear LM head, a forward that takes ``logits_to_keep``, no transform around the head."""
    import torch  # heavy: loaded when used

    inner = _unwrapped(model)
    config = getattr(inner, "config", None)
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    if getattr(config, "model_type", None) not in CHUNKED_MODEL_TYPES or not isinstance(head, torch.nn.Linear):
        return False
    if "logits_to_keep" not in inspect.signature(inner.forward).parameters:
        return False
    return not any(getattr(config, name, None) not in (None, 1.0) for name in _AROUND_HEAD)


def loss_positions(labels, example_ids, mode: str, multiple: int = 1):
    """Return (positions, targets, weights) of a micro-batch's loss tokens, computed on the host.

    ``positions`` index the flattened (rows x width) hidden states whose next token carries loss,
    ``targets`` are those next tokens; ``weights`` is None for ``token`` normalisation, else each
    position's 1 / (loss tokens of its example), so that the weighted sum is the sum of example means.
    Their count is padded up to a multiple of ``multiple`` (the LM head's input then takes a few shapes
    only) with position 0 and target ``IGNORE_INDEX``, whose NLL and gradient are exactly zero."""
    import torch  # heavy: loaded when used

    targets = labels[:, 1:]
    rows, cols = (targets != IGNORE_INDEX).nonzero(as_tuple=True)
    positions, picked = rows * labels.shape[1] + cols, targets[rows, cols]
    weights = None
    if mode != "token":
        ids = example_ids[:, 1:][rows, cols]
        weights = 1.0 / torch.bincount(ids).to(torch.float32)[ids]
    padding = -len(positions) % multiple
    if padding:
        positions = torch.cat([positions, positions.new_zeros(padding)])
        picked = torch.cat([picked, picked.new_full((padding,), IGNORE_INDEX)])
        weights = None if weights is None else torch.cat([weights, weights.new_zeros(padding)])
    return positions, picked, weights


def _chunk_nll(head, hidden, targets, weights):
    """Return the (weighted) sum of the NLL of ``targets`` under ``head(hidden)``, log-softmax in fp32."""
    import torch.nn.functional as F  # heavy: loaded when used

    nll = F.cross_entropy(head(hidden).float(), targets, reduction="none")  # 0 where targets is IGNORE_INDEX
    return (nll * weights).sum() if weights is not None else nll.sum()


def final_hidden_states(model, input_ids, position_ids):
    """Return the final hidden states (rows x width x hidden) of a (packed) micro-batch, without the LM head.

    Masking as :func:`forward_logits`. The LM head runs on no position (``logits_to_keep`` is an empty
    index) and the states come back as an output of ``model``'s forward, so a DeepSpeed engine's hooks on
    its outputs (which start its backward bookkeeping) fire when the loss's gradient reaches them."""
    import torch  # heavy: loaded when used

    none = torch.zeros(0, dtype=torch.long, device=input_ids.device)
    out = model(input_ids=input_ids, position_ids=position_ids, use_cache=False, output_hidden_states=True,
                logits_to_keep=none)
    return out.hidden_states[-1]


def chunked_loss(hidden, head, positions, targets, weights, chunk_rows: int):
    """Return the summed NLL (weighted by ``weights`` when given) of ``targets`` at ``positions`` of ``hidden``.

    The LM head and cross-entropy run on ``chunk_rows`` positions at a time; with gradients on, each chunk
    is checkpointed (its logits are recomputed in backward), so one chunk's logits live at a time. With no
    loss position at all the result is a zero that still reaches every parameter (so ZeRO sees a gradient)."""
    import torch  # heavy: loaded when used
    from torch.utils.checkpoint import checkpoint  # heavy: loaded when used

    flat = hidden.reshape(-1, hidden.shape[-1]).index_select(0, positions)
    total = None
    for start in range(0, max(len(positions), 1), chunk_rows):
        part = slice(start, start + chunk_rows)
        args = (head, flat[part], targets[part], None if weights is None else weights[part])
        if torch.is_grad_enabled():
            nll = checkpoint(_chunk_nll, *args, use_reentrant=False, preserve_rng_state=False)
        else:
            nll = _chunk_nll(*args)
        total = nll if total is None else total + nll
    return total


def micro_batch_loss(model, batch, mode: str, device, path: str = "chunked", chunk_rows: int | None = None,
                     multiple: int = 1):
    """Return this micro-batch's share of the global loss numerator (a scalar tensor with gradient on ``device``).

    ``batch``: the (input_ids, position_ids, labels, example_ids) CPU tensors of ``packing.collate_rows``.
    ``path``: ``chunked`` (loss positions picked on the host: no device-to-host sync, their count padded to a
    ``multiple``) or ``reference`` (see the module docstring); ``chunk_rows`` defaults to :data:`CHUNK_LOGITS` /
    vocabulary."""
    if path not in LOSS_PATHS:
        raise ValueError(f"loss path {path!r}: expected one of {LOSS_PATHS}")
    input_ids, position_ids, labels, example_ids = batch
    if path == "reference":
        input_ids, position_ids, labels, example_ids = (t.to(device, non_blocking=True) for t in batch)
        return summed_loss(forward_logits(model, input_ids, position_ids), labels, example_ids, mode)
    positions, targets, weights = (t if t is None else t.to(device, non_blocking=True)
                                   for t in loss_positions(labels, example_ids, mode, multiple))
    hidden = final_hidden_states(model, input_ids.to(device, non_blocking=True),
                                 position_ids.to(device, non_blocking=True))
    head = _unwrapped(model).get_output_embeddings()
    rows = chunk_rows or max(1, CHUNK_LOGITS // head.out_features)
    return chunked_loss(hidden, head, positions, targets, weights, rows)
