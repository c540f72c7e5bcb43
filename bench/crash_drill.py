"""Crash drill for the torch harness: train exactly as ``upft_ray.training.harness_torch`` does, then SIGKILL
every rank right after the checkpoint at ``--kill-at-step`` is committed (a real crash: no clean-up).

    torchrun --standalone --nproc_per_node=2 bench/crash_drill.py --kill-at-step 6 LOOP_CONFIG --checkpoint-dir DIR

Rerunning the plain harness on the same checkpoint directory then resumes from that checkpoint. The crash
is injected here, by wrapping the harness's commit, so the harness itself carries no test hook.
"""

from __future__ import annotations

import argparse
import os
import signal

from upft_ray.training import harness_torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kill-at-step", type=int, required=True, help="SIGKILL after this checkpoint is committed")
    drill, rest = parser.parse_known_args()
    commit = harness_torch.commit_checkpoint

    def commit_then_crash(root, name: str, rank: int, keep: int) -> None:
        commit(root, name, rank, keep)
        if int(name.removeprefix("step_")) >= drill.kill_at_step:
            os.kill(os.getpid(), signal.SIGKILL)

    harness_torch.commit_checkpoint = commit_then_crash
    harness_torch.main(rest)


if __name__ == "__main__":
    main()
