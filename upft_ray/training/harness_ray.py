"""Ray Train harness: rank layout from Ray's context, checkpoints through ``ray.train.report``.

Ray Train starts one worker per rank, initialises the torch process group (NCCL with GPUs, gloo
without) and restarts workers after a failure; this module only adapts that to the recipe.
"""

from __future__ import annotations

import os
from pathlib import Path

from upft_ray.io.fencing import check_fence
from upft_ray.runtime.logs import configure_worker_logging
from upft_ray.runtime.scratch import remove_orphaned_scratch, remove_scratch, scratch_dir
from upft_ray.training.loop import LoopConfig
from upft_ray.training.recipe import Recipe, loop_device


def _set_dist_env(ctx) -> None:
    # DeepSpeed reads the rank layout from the environment; Ray Train keeps it in its context.
    os.environ["RANK"] = str(ctx.get_world_rank())
    os.environ["WORLD_SIZE"] = str(ctx.get_world_size())
    os.environ["LOCAL_RANK"] = str(ctx.get_local_rank())
    os.environ["LOCAL_WORLD_SIZE"] = str(ctx.get_local_world_size())


STAGING_PREFIX = "upft-ckpt-"  # a worker killed between its save and Ray Train's copy leaves a whole checkpoint


def train_loop_per_worker(train_loop_config: dict) -> None:
    """Ray Train entry point: train ``train_loop_config["loop"]`` (a LoopConfig); report checkpoints."""
    import ray.train  # heavy: Ray Train loads only in its workers

    config: LoopConfig = train_loop_config["loop"]
    configure_worker_logging()
    ctx = ray.train.get_context()
    _set_dist_env(ctx)
    if config.train.use_gpu:
        import ray.train.torch  # heavy: Ray Train loads only in its workers

        device = ray.train.torch.get_device()  # the GPU Ray assigned (an index into CUDA_VISIBLE_DEVICES)
    else:
        device = loop_device(False, 0)
    remove_orphaned_scratch(STAGING_PREFIX)
    recipe = Recipe(config, ctx.get_world_rank(), ctx.get_world_size(), device)
    recipe.setup()
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as ckpt_dir:
            recipe.load_checkpoint(ckpt_dir)

    def report(state: dict) -> None:
        # Every rank saves its part and reports it; Ray Train merges the files and registers the
        # checkpoint only once every rank has reported (a half-saved one is never resumed from).
        tmp = scratch_dir(STAGING_PREFIX)  # named by the pid: a killed worker's is removed by the next one
        recipe.save_checkpoint(tmp)
        # A fenced-off attempt (another one leased the run directory) must not register a checkpoint
        # there; Ray Train's own copy into storage is not fsynced by us (see cluster/README.md).
        check_fence(Path(config.examples_dir))
        ray.train.report({k: state[k] for k in ("step", "consumed_examples")},
                         checkpoint=ray.train.Checkpoint.from_directory(tmp))
        remove_scratch(tmp)

    recipe.fit(report)
    recipe.cleanup()
