"""Run in a process of its own (DeepSpeed on CPU, gloo, one rank): for each ZeRO stage and precision, train a tiny
random Qwen2 a step, save a checkpoint, take one more step, then load the checkpoint into a new engine and take
that step again. Prints JSON: per case, the checkpoint files still mapped into this process after the load, and
whether the step after the load gives the weights the step after the save gave.

    python tests/training/resume_probe.py WORK_DIR
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHAPE = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, tie_word_embeddings=True)


def mapped_files(under: Path) -> list[str]:
    """Return the files under ``under`` that this process has memory-mapped."""
    with open("/proc/self/maps") as fh:
        paths = {line.split(None, 5)[5].strip() for line in fh if len(line.split(None, 5)) == 6}
    return sorted(p for p in paths if p.startswith(str(under)))


def case(stage: int, precision: str, work: Path) -> dict:
    """Return the figures of one ZeRO stage and precision (module docstring)."""
    import deepspeed
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from upft_ray.config import TrainConfig
    from upft_ray.training.checkpointing import load_training_state, save_training_state
    from upft_ray.training.loop import deepspeed_config
    from upft_ray.training.memory import plan_memory

    config = deepspeed_config(TrainConfig(zero_stage=stage, micro_batch_size=1, precision=precision, warmup_ratio=0),
                              1, precision, plan_memory(stage, False, 1, bf16=precision == "bf16"))
    ids, cpu = torch.randint(0, SHAPE["vocab_size"], (1, 32), generator=torch.Generator().manual_seed(1)), \
        torch.device("cpu")

    def engine():
        torch.manual_seed(0)
        model = Qwen2ForCausalLM(Qwen2Config(**SHAPE)).to(torch.bfloat16 if precision == "bf16" else torch.float32)
        return deepspeed.initialize(model=model, model_parameters=model.parameters(), config=config)[0]

    def step(e) -> list[torch.Tensor]:
        e.backward(e(input_ids=ids, labels=ids).loss)
        e.step()
        return [p.detach().float().clone() for p in e.module.parameters()]

    checkpoint = work / f"zero{stage}-{precision}"
    first = engine()
    step(first)
    save_training_state(first, checkpoint, 0, cpu, {"step": 1, "consumed_examples": 1})
    expected = step(first)
    resumed = engine()
    load_training_state(resumed, checkpoint, 0, cpu)
    still_mapped = mapped_files(checkpoint)
    same = all(torch.equal(a, b) for a, b in zip(expected, step(resumed), strict=True))
    return {"stage": stage, "precision": precision, "still_mapped": still_mapped, "same_weights_after_a_step": same}


def start_one_rank() -> None:
    """Make this process rank 0 of 1 (DeepSpeed on the CPU over gloo) with the repository importable."""
    os.environ.update(DS_ACCELERATOR="cpu", RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(29500 + os.getpid() % 1000))
    sys.path.insert(0, str(REPO))
    import deepspeed

    deepspeed.init_distributed(dist_backend="gloo")


def main(work: Path) -> None:
    start_one_rank()
    print(json.dumps([case(stage, precision, work) for stage in (0, 1, 2) for precision in ("fp32", "bf16")]))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
