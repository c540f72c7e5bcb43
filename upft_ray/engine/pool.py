"""Engine actor pools inside Ray Data: which engine, how many, their resources, their retries.

Each engine is one Ray Data actor (``upft_ray.engine.generator.VLLMGenerator``, or the stages'
chunk workers around it); Ray Data restarts an actor that dies and retries the batches it held.

Engine backends (``engine.backend``): ``vllm``, or ``module:Class`` naming any class with
VLLMGenerator's interface: built once per actor as ``Class(model, engine_config, seed)``, awaited with
a batch of requests (columns in ``upft_ray.engine.generator``), returning it with the generated columns.
The module must be importable on every Ray worker (an installed package, or on the workers'
``PYTHONPATH``). The benchmarks time the pipeline alone with one that makes tokens up.
"""

from __future__ import annotations

import importlib

from upft_ray.config import EngineConfig
from upft_ray.engine.generator import VLLMGenerator


def engine_actor_options(engine: EngineConfig) -> dict:
    """Return the ``map_batches`` options for an engine actor pool: replicas, resources, batches in flight.

    Ray Data restarts an engine actor that dies, without limit, and retries the batches it held: a lost
    node is no reason to stop. What ends a chunk that keeps killing engines is the chunked executor's
    death budget (``upft_ray.execution.isolation``). Raises ValueError for ``num_replicas: auto`` not yet
    decided (``upft_ray.runtime.placement`` does that)."""
    import ray.data  # heavy: Ray loads only when a stage runs

    if engine.num_replicas == "auto":
        raise ValueError("engine.num_replicas: 'auto' must be decided from the cluster's GPUs first "
                         "(upft_ray.runtime.placement.with_resolved_resources; the orchestration does it)")
    return {
        "compute": ray.data.ActorPoolStrategy(size=engine.num_replicas,
                                              max_tasks_in_flight_per_actor=engine.max_batches_in_flight,
                                              max_concurrent_calls_per_actor=engine.max_batches_in_flight),
        "num_cpus": engine.cpus_per_replica,
        "num_gpus": engine.gpus_per_replica,
    }


def engine_class(engine: EngineConfig) -> type:
    """Return the class of ``engine.backend``: VLLMGenerator for ``vllm``, else the ``module:Class`` it names.

    Raises ValueError naming the backend when it cannot be imported or holds no such class."""
    if engine.backend == "vllm":
        return VLLMGenerator
    module, _, name = engine.backend.partition(":")
    try:
        found = getattr(importlib.import_module(module), name) if name else None
    except (ImportError, AttributeError) as err:
        raise ValueError(f"engine.backend {engine.backend!r} cannot be loaded ({type(err).__name__}: {err})") from err
    if not isinstance(found, type):
        raise ValueError(f"engine.backend {engine.backend!r} names no class: give vllm or module:Class")
    return found


def add_generation(ds, model: str, engine: EngineConfig, seed: int):
    """Return ``ds`` with a generation stage appended (lazy: nothing runs until consumed)."""
    return ds.map_batches(
        engine_class(engine),
        fn_constructor_kwargs={"model": model, "engine": engine, "seed": seed},
        batch_size=engine.batch_size,
        **engine_actor_options(engine),
    )
