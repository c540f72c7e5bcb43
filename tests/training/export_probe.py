"""Run in a process of its own (DeepSpeed on CPU, gloo, one rank): for each ZeRO stage and precision, train a tiny
random Qwen2 two steps, save a training checkpoint and export it in float32. Prints JSON: per case, whether the
export holds exactly the engine's fp32 weights (the optimizer's fp32 master copy where the module runs in bf16),
the export's error where it raised, and how many weights the bf16 module copy had rounded away from the master (ZeRO-3: None, partitioned).

    python tests/training/export_probe.py WORK_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from resume_probe import SHAPE, start_one_rank  # beside this file: the same tiny model, the same one-rank start


def fp32_weights(engine) -> dict:
    """Return {name: the engine's fp32 value} per parameter: the optimizer's master copy where it keeps one."""
    from deepspeed.utils import safe_get_full_fp32_param
    from torch._utils import _unflatten_dense_tensors

    masters = {}  # ZeRO-0 in bf16: DeepSpeed's FP16 optimizers keep fp32 groups, no per-parameter mapping
    optimizer = engine.optimizer
    if hasattr(optimizer, "fp32_groups_flat"):
        groups = [_unflatten_dense_tensors(f, p) for f, p in zip(optimizer.fp32_groups_flat, optimizer.fp16_groups)]
    else:
        groups = getattr(optimizer, "fp32_groups", None) or []
    for params, group in zip(optimizer.fp16_groups if groups else [], groups, strict=True):
        masters.update({id(p): m for p, m in zip(params, group, strict=True)})
    weights = {}
    for name, param in engine.module.named_parameters():
        master = masters.get(id(param), safe_get_full_fp32_param(param))
        weights[name] = (param.detach() if master is None else master).float().clone()
    return weights


def case(stage: int, precision: str, work: Path) -> dict:
    """Return the figures of one ZeRO stage and precision (module docstring)."""
    import deepspeed
    import torch
    from safetensors.torch import load_file
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from upft_ray.config import TrainConfig
    from upft_ray.training.checkpointing import save_training_state
    from upft_ray.training.export import export_hf_checkpoint
    from upft_ray.training.loop import deepspeed_config
    from upft_ray.training.memory import plan_memory

    # a learning rate small enough that bf16 rounds most of the update away (the quickstart's 5e-6 class)
    config = deepspeed_config(TrainConfig(zero_stage=stage, micro_batch_size=1, precision=precision, warmup_ratio=0,
                                          learning_rate=1e-4), 1, precision,
                              plan_memory(stage, False, 1, bf16=precision == "bf16"))
    ids = torch.randint(0, SHAPE["vocab_size"], (1, 32), generator=torch.Generator().manual_seed(1))
    name = f"zero{stage}-{precision}"
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**SHAPE))
    model.save_pretrained(work / f"{name}-model")
    model = model.to(torch.bfloat16 if precision == "bf16" else torch.float32)
    engine = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=config)[0]
    for _ in range(2):
        engine.backward(engine(input_ids=ids, labels=ids).loss)
        engine.step()
    save_training_state(engine, work / name, 0, torch.device("cpu"), {"step": 2, "consumed_examples": 2})
    expected = fp32_weights(engine)
    rounded = None if stage == 3 else \
        sum(int((p.detach().float() != expected[n]).sum()) for n, p in engine.module.named_parameters())
    result = {"stage": stage, "precision": precision, "rounded_in_module": rounded, "error": None, "exact": False}
    try:
        export_hf_checkpoint(work / name, str(work / f"{name}-model"), work / f"{name}-export", "float32")
    except Exception as error:  # noqa: BLE001 - the probe reports it
        result["error"] = f"{type(error).__name__}: {error}"
        return result
    exported = load_file(str(work / f"{name}-export" / "model.safetensors"))
    result["exact"] = set(exported) == set(expected) - {"lm_head.weight"} and \
        all(torch.equal(exported[k], expected[k]) for k in exported)
    return result


def main(work: Path) -> None:
    start_one_rank()
    print(json.dumps([case(stage, precision, work) for stage in (0, 1, 2, 3) for precision in ("fp32", "bf16")]))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
