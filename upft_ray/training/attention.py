"""Attention for packed rows: masked per example without a dense mask, where the device allows it.

Packed rows carry position ids that restart at every example, and transformers derives from them which
tokens may attend to which (``packing.py``). With SDPA, the default, that becomes a dense rows x width x
width mask: it rules out the flash kernels and computes every (query, key) block of a row although an
example attends only to itself (a 4,096-token row of ~300-token UPFT examples: ~13x the attention FLOPs
needed). With ``flex_attention`` transformers turns the same per-example causal mask into a block mask,
and blocks outside every example are skipped.

Flex attention compiles a Triton kernel on first use and has no backward on CPU, so it is used only for
packed rows on GPUs, and only once a small forward and backward with a block mask has run on the device;
anything else keeps the model's default, which computes the same attention up to floating-point
summation order. ``UPFT_ATTENTION=sdpa`` keeps the default on GPUs too (for benchmarks of the two).
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("upft.train")


def flex_attention_runs(device) -> bool:
    """Return whether compiled flex attention with a two-example block mask runs forward and backward on
    ``device`` (False, with a warning naming the error, when it does not)."""
    import torch  # heavy: loaded on training ranks only
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention  # heavy: as above

    try:
        example = torch.tensor([0] * 80 + [1] * 48, device=device)

        def same_example_causal(b, h, q, kv):
            return (example[q] == example[kv]) & (q >= kv)

        block_mask = create_block_mask(same_example_causal, None, None, 128, 128, device=device)
        query = torch.randn(1, 2, 128, 16, device=device, dtype=torch.bfloat16, requires_grad=True)
        torch.compile(flex_attention)(query, query, query, block_mask=block_mask).float().sum().backward()
        return query.grad is not None and bool(torch.isfinite(query.grad).all())
    except Exception as error:  # noqa: BLE001 - any failure means: keep the default attention
        log.warning("flex attention does not run on %s (%s: %s); packed rows keep SDPA with a dense mask",
                    device, type(error).__name__, str(error).splitlines()[0] if str(error) else "")
        return False


def packed_attention(use_gpu: bool, packing: bool, device) -> str | None:
    """Return the ``attn_implementation`` to load the model with: ``flex_attention`` for packed rows on a GPU
    where it runs (unless ``UPFT_ATTENTION=sdpa``), else None (the model's default)."""
    if not (use_gpu and packing) or os.environ.get("UPFT_ATTENTION", "auto") == "sdpa":
        return None
    return "flex_attention" if flex_attention_runs(device) else None
