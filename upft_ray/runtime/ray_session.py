"""Starting or joining Ray, and the environment the stages' workers need.

A private local Ray starts with its dashboard: Ray Train's placement-group cleaner asks the State API
(which the dashboard serves) whether the controller lives, and without it logs a warning every second.
Its token auth is off (nothing outside this machine can reach a private local Ray).

In a normal run the workers' own output (engine start-up, library notices) stays in Ray's log files
(``/tmp/ray/session_latest/logs``): the driver prints the stages' progress itself, and a worker's failure
reaches the driver as an exception. ``--verbose`` forwards every worker line to the console.
"""

from __future__ import annotations

import gc
import logging
import os
from contextlib import contextmanager

from upft_ray.config import RayConfig
from upft_ray.io.fencing import ENV as RUN_LEASE_ENV
from upft_ray.runtime.cache import cache_dir, torch_extensions_dir
from upft_ray.runtime.logs import VERBOSE, library_level, quiet_native_stderr, verbosity, worker_env


def worker_env_vars() -> dict[str, str]:
    """Return env vars every Ray worker of a run gets (only ones the user has not set)."""
    wanted = {
        "TORCH_EXTENSIONS_DIR": str(torch_extensions_dir()),
        "TOKENIZERS_PARALLELISM": "false",
        # Ray Train's controller polls workers this often; 2 s default makes short runs slow.
        "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
        "UPFT_CACHE": str(cache_dir()),
    }
    env = {**{k: os.environ.get(k, v) for k, v in wanted.items()}, **worker_env()}
    if os.environ.get(RUN_LEASE_ENV):  # the attempt's fencing epoch (upft_ray.io.fencing), for worker-side commits
        env[RUN_LEASE_ENV] = os.environ[RUN_LEASE_ENV]
    return env


@contextmanager
def ray_session(cfg: RayConfig):
    """Start a private local Ray (``address: local``) or join a cluster; shut down what we started.

    Yields nothing; inside the block ``ray`` is initialised. An already-initialised Ray (tests, a
    job driver) is used as it is and left running."""
    import ray  # heavy: Ray loads only when a stage runs

    if ray.is_initialized():
        yield
        return
    with quiet_native_stderr():
        _init(cfg)
        quiet_ray_data()
        try:
            yield
        finally:
            ray.shutdown()


def _init(cfg: RayConfig) -> None:
    import ray  # heavy: Ray loads only when a stage runs

    shown = {"logging_level": library_level(), "log_to_driver": verbosity() >= VERBOSE}
    if cfg.address == "local":
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(address="local", include_dashboard=True, dashboard_host="127.0.0.1", num_cpus=cfg.num_cpus or None,
                 runtime_env={"env_vars": worker_env_vars()}, **shown)
    else:
        # On a cluster the job's own runtime_env (working_dir, pip, env vars) governs; a second
        # runtime_env here would be merged into it and could shadow what the job spec set. Only the
        # attempt's fencing epoch is added: Ray merges env vars key by key, so nothing is shadowed.
        lease = {RUN_LEASE_ENV: os.environ[RUN_LEASE_ENV]} if os.environ.get(RUN_LEASE_ENV) else {}
        ray.init(address=cfg.address, runtime_env={"env_vars": lease} if lease else None, **shown)


def quiet_ray_data() -> None:
    """Keep Ray Data's progress tables out of a normal run (the stages log their own progress lines)."""
    import ray.data  # heavy: Ray loads only when a stage runs

    if library_level() > logging.INFO:
        ray.data.DataContext.get_current().enable_progress_bars = False
        logging.getLogger("ray.data").setLevel(library_level())


def release_placement_groups() -> int:
    """Remove every placement group this driver's job still holds; return how many. For after a failed run: a
    Ray Train run whose worker was killed (out of memory) can leave its workers' reservation behind for good,
    and the next run's tasks then wait for CPUs nothing uses (seen in a sweep: 2 of 4 CPUs held, the next
    sampling's readers never scheduled)."""
    import ray  # heavy: Ray is up whenever a run failed in it
    from ray.util.placement_group import PlacementGroup, remove_placement_group  # heavy: Ray

    gc.collect()  # handles kept alive only by reference cycles go first, and their actors with them
    job = ray.get_runtime_context().get_job_id()  # a placement group's id ends with its job's
    held = [pg_id for pg_id, info in ray.util.placement_group_table().items()
            if pg_id.endswith(job) and info["state"] in ("CREATED", "PENDING", "RESCHEDULING")]
    for pg_id in held:
        remove_placement_group(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(pg_id))))
    return len(held)
