"""What training keeps in device memory: the ZeRO stage and optimizer offload that ``auto`` picks, and which
activations are kept for backward (``train.gradient_checkpointing``).

State per parameter under DeepSpeed's AdamW: the weights (2 bytes in bf16, 4 in fp32) and their gradients
(the same), plus the optimizer's part: Adam's two fp32 moments (8) and, in bf16, fp32 master weights and
fp32 gradient partitions (4 + 4). ZeRO-1 shards the optimizer's part over the ranks, ZeRO-2 the gradients
too, ZeRO-3 the weights too; offload moves the optimizer's part (and its step) to host memory. ``auto``
takes the first plan whose state fills at most ``STATE_SHARE`` of the GPU, leaving the rest to activations,
the loss's chunks and the allocator: on one GPU ZeRO-1 (nothing to shard) then ZeRO-1 with offload; on
several ZeRO-2, ZeRO-3, ZeRO-3 with offload (offload is slow: host memory and a CPU step, so last). A
stage or offload set by hand is kept. On CPUs there is no device memory to plan: ZeRO-1 on one rank, 2 on
several, no offload.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial

log = logging.getLogger("upft.train")

STATE_SHARE = 0.6  # of the GPU's memory for weights, gradients and optimizer state; the rest for activations


@dataclass(frozen=True)
class MemoryPlan:
    """The ZeRO stage and offload a run trains with, the state bytes per device they leave, and why."""
    zero_stage: int
    offload: bool
    state_bytes: int | None = None
    why: str = "as configured"


def state_bytes(params: int, world: int, stage: int, bf16: bool, offload: bool) -> int:
    """Return the bytes of weights, gradients and optimizer state one rank holds on its device."""
    weight = 2 if bf16 else 4
    optimizer = 8 + (8 if bf16 else 0)
    shards = max(world, 1)
    weights = params * weight / (shards if stage >= 3 else 1)
    grads = params * weight / (shards if stage >= 2 else 1)
    opt = 0 if offload else params * optimizer / (shards if stage >= 1 else 1)
    return int(weights + grads + opt)


def candidates(stage: int | str, offload: bool | str, world: int) -> list[tuple[int, bool]]:
    """Return the (stage, offload) plans ``auto`` tries, in order (one when neither is ``auto``)."""
    stages = ([1] if world == 1 else [2, 3]) if stage == "auto" else [int(stage)]
    offloads = [False, True] if offload == "auto" else [bool(offload)]
    plans = [(s, o) for o in offloads for s in stages]
    return [(s, o) for s, o in plans if not (o and s == 0)]  # offload needs a ZeRO stage (config rules say so)


def plan_memory(stage: int | str, offload: bool | str, world: int, params: int | None = None,
                device_bytes: int | None = None, bf16: bool = True) -> MemoryPlan:
    """Return the plan for ``stage`` / ``offload`` (numbers, booleans or ``auto``) on ``world`` ranks: the first
    candidate whose state fits ``STATE_SHARE`` of ``device_bytes``, else the last one (said in ``why``). Without
    ``params`` or ``device_bytes`` (a CPU run) ``auto`` means the first candidate without offload."""
    plans = candidates(stage, offload, world)
    if params is None or device_bytes is None:
        chosen = next((p for p in plans if not p[1]), plans[0])
        return MemoryPlan(*chosen, why="auto: no device memory to plan (CPU)" if "auto" in (stage, offload)
                          else "as configured")
    budget = STATE_SHARE * device_bytes
    sized = [(s, o, state_bytes(params, world, s, bf16, o)) for s, o in plans]
    fits = [plan for plan in sized if plan[2] <= budget]
    s, o, need = fits[0] if fits else min(sized, key=lambda plan: plan[2])
    gib = f"{need / 2**30:.1f} GiB of state per device, {STATE_SHARE:.0%} of {device_bytes / 2**30:.0f} GiB is " \
          f"{budget / 2**30:.1f}"
    if len(plans) == 1:
        why = f"as configured ({gib})"
    else:
        why = f"auto: the first of {len(plans)} plans that fits ({gib})" if fits else \
            f"auto: no plan fits; the one holding least ({gib}): expect out-of-memory errors"
    return MemoryPlan(s, o, need, why)


def enable_checkpointing(model, mode: bool | str) -> None:
    """Recompute activations in backward for every decoder layer of ``model`` (a transformers model): ``True``
    recomputes the whole layer (transformers' gradient checkpointing); ``"selective"`` keeps the outputs of the
    matmuls and attention and recomputes only the rest (norms, activations, rotary embeddings, residual adds):
    most of the memory saved, a small part of the compute spent again. ``False`` does nothing."""
    if mode is False:
        return
    if mode == "selective":
        from torch.utils.checkpoint import create_selective_checkpoint_contexts  # heavy: on training ranks only

        context = partial(create_selective_checkpoint_contexts, _keep_matmuls_and_attention)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False,
                                                                           "context_fn": context})
    else:
        model.gradient_checkpointing_enable()


def _kept_ops() -> frozenset:
    """Return the aten operators whose outputs selective checkpointing keeps (those present in this torch)."""
    import torch  # heavy: on training ranks only

    aten = torch.ops.aten
    names = ("mm", "addmm", "bmm", "_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
             "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_flash_attention_for_cpu")
    ops = {getattr(aten, name).default for name in names if hasattr(aten, name)}
    flex = getattr(torch.ops.higher_order, "flex_attention", None)
    return frozenset(ops | ({flex} if flex is not None else set()))


def _keep_matmuls_and_attention(ctx, op, *args, **kwargs):
    from torch.utils.checkpoint import CheckpointPolicy  # heavy: on training ranks only

    global _KEPT
    if _KEPT is None:
        _KEPT = _kept_ops()
    return CheckpointPolicy.MUST_SAVE if op in _KEPT else CheckpointPolicy.PREFER_RECOMPUTE


_KEPT: frozenset | None = None
