"""Plain ``torch.distributed`` harness: the recipe under torchrun or as one process, no Ray needed.

    torchrun --nproc_per_node=8 -m upft_ray.training.harness_torch RUN/train/loop_config.json \\
        --checkpoint-dir RUN/train/torch_checkpoints --export-dir RUN/train/final_torchrun

``loop_config.json`` is what ``upft train`` writes beside its examples (the same dict Ray Train
workers get). Checkpoints go to ``CHECKPOINT_DIR/step_NNNNNNNN/``; the checkpoint is committed
(``CHECKPOINT_DIR/latest.json`` rewritten atomically and fsynced by rank 0, each rank's files fsynced first) only after a barrier that every
rank passes once it has saved, so a crash mid-save resumes from the previous one. Rerunning the
same command resumes from ``latest.json``. With several nodes, CHECKPOINT_DIR must be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from pathlib import Path

from upft_ray.io.durable import fsync_tree, make_dirs, remove_path, write_text_durably
from upft_ray.runtime.logs import configure_worker_logging
from upft_ray.training.export import export_hf_checkpoint, resolve_export_dtype
from upft_ray.training.loop import LoopConfig
from upft_ray.training.recipe import Recipe, loop_device


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_layout() -> tuple[int, int, int]:
    """Return (rank, world size, local rank) from torchrun's env; one process when torchrun is absent
    (the env DeepSpeed reads is then filled in)."""
    if "RANK" not in os.environ:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0"))


def latest_checkpoint(root: Path) -> Path | None:
    """Return the last committed checkpoint under ``root``, or None."""
    marker = root / "latest.json"
    return root / json.loads(marker.read_text())["dir"] if marker.is_file() else None


def commit_checkpoint(root: Path, name: str, rank: int, keep: int) -> None:
    """Commit checkpoint ``name`` under ``root`` once every rank has saved it (rank 0 rewrites ``latest.json``,
    durably and fenced), then delete all but the last ``keep`` checkpoints."""
    import torch.distributed as dist  # heavy: loaded on training ranks only

    dist.barrier()  # every rank has saved (and fsynced) its part
    if rank == 0:
        write_text_durably(root / "latest.json", json.dumps({"dir": name}))  # fenced: see upft_ray.io.fencing
        for old in sorted(p for p in root.glob("step_*") if p.is_dir())[:-keep]:
            remove_path(old)
    dist.barrier()


def run(config: LoopConfig, checkpoint_dir: Path, export_dir: Path | None = None) -> dict:
    """Train with the recipe on this process's rank; resume from ``checkpoint_dir`` when it has a committed
    checkpoint; rank 0 exports the final weights to ``export_dir`` (HF safetensors) when given. Return the
    final client state."""
    rank, world, local_rank = rank_layout()
    recipe = Recipe(config, rank, world, loop_device(config.train.use_gpu, local_rank))
    recipe.setup()
    checkpoint_dir = make_dirs(Path(checkpoint_dir))
    resume = latest_checkpoint(checkpoint_dir)
    if resume is not None:
        recipe.load_checkpoint(resume)

    def save(state: dict) -> None:
        name = f"step_{state['step']:08d}"
        (checkpoint_dir / name).mkdir(exist_ok=True)
        recipe.save_checkpoint(checkpoint_dir / name)
        fsync_tree(checkpoint_dir / name)  # this rank's files are on disk before the marker can name them
        commit_checkpoint(checkpoint_dir, name, rank, config.train.keep_last_k)

    state = recipe.fit(save, echo_steps=True)
    recipe.cleanup()
    import torch.distributed as dist  # heavy: loaded on training ranks only

    dist.barrier()
    dist.destroy_process_group()  # the export below needs no peers (and must not hit a collective timeout)
    if export_dir is not None and rank == 0:
        export_hf_checkpoint(latest_checkpoint(checkpoint_dir), config.model_path, Path(export_dir),
                             resolve_export_dtype(config.train))
    return state


def torchrun_command(loop_json: Path, checkpoint_dir: Path, export_dir: Path | None = None, nproc: int = 1,
                     script: Path | None = None, extra: tuple[str, ...] = ()) -> list[str]:
    """Return the argv that runs this harness under ``torchrun --standalone`` with ``nproc`` ranks (``script``:
    a file that wraps :func:`main`, given ``extra`` arguments first, instead of this module)."""
    target = [str(script), *extra] if script else ["-m", "upft_ray.training.harness_torch"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               *target, str(loop_json), "--checkpoint-dir", str(checkpoint_dir)]
    return command + (["--export-dir", str(export_dir)] if export_dir is not None else [])


def main(argv: list[str] | None = None) -> None:
    """Command line: ``[torchrun ...] python -m upft_ray.training.harness_torch LOOP_CONFIG --checkpoint-dir DIR``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("loop_config", type=Path, help="loop config JSON (RUN/train/loop_config.json)")
    parser.add_argument("--checkpoint-dir", type=Path, required=True, help="where checkpoints are written/resumed")
    parser.add_argument("--export-dir", type=Path, help="write the final weights here as an HF checkpoint")
    args = parser.parse_args(argv)
    configure_worker_logging()
    run(LoopConfig.model_validate_json(args.loop_config.read_text()), args.checkpoint_dir, args.export_dir)


if __name__ == "__main__":
    main()
