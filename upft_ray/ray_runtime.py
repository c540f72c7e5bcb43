"""Starting or joining Ray, and the environment the stages' workers need."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from upft_ray.config import RayConfig
from upft_ray.models import cache_dir
from upft_ray.run_lease import ENV as RUN_LEASE_ENV


def torch_extensions_dir() -> Path:
    """Return where DeepSpeed's compiled ops are cached (compiling them costs 1-2 min each)."""
    return Path(os.environ.get("TORCH_EXTENSIONS_DIR", cache_dir() / "torch_extensions"))


def worker_env_vars() -> dict[str, str]:
    """Return env vars every Ray worker of a run gets (only ones the user has not set)."""
    wanted = {
        "TORCH_EXTENSIONS_DIR": str(torch_extensions_dir()),
        "TOKENIZERS_PARALLELISM": "false",
        # Ray Train's controller polls workers this often; 2 s default makes short runs slow.
        "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
        "UPFT_CACHE": str(cache_dir()),
    }
    env = {k: os.environ.get(k, v) for k, v in wanted.items()}
    if os.environ.get(RUN_LEASE_ENV):  # the attempt's fencing epoch (upft_ray.run_lease), for worker-side commits
        env[RUN_LEASE_ENV] = os.environ[RUN_LEASE_ENV]
    return env


@contextmanager
def ray_session(cfg: RayConfig):
    """Start a private local Ray (``address: local``) or join a cluster; shut down what we started.

    Yields nothing; inside the block ``ray`` is initialised. An already-initialised Ray (tests, a
    job driver) is used as it is and left running."""
    import ray

    if ray.is_initialized():
        yield
        return
    if cfg.address == "local":
        ray.init(address="local", include_dashboard=False, num_cpus=cfg.num_cpus or None,
                 runtime_env={"env_vars": worker_env_vars()})
    else:
        # On a cluster the job's own runtime_env (working_dir, pip, env vars) governs; a second
        # runtime_env here would be merged into it and could shadow what the job spec set. Only the
        # attempt's fencing epoch is added: Ray merges env vars key by key, so nothing is shadowed.
        lease = {RUN_LEASE_ENV: os.environ[RUN_LEASE_ENV]} if os.environ.get(RUN_LEASE_ENV) else {}
        ray.init(address=cfg.address, runtime_env={"env_vars": lease} if lease else None)
    try:
        yield
    finally:
        ray.shutdown()
