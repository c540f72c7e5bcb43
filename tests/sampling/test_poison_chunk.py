"""A chunk that kills every engine actor it meets fails the run with an error after a bounded number of
retries (Ray Data alone would restart the actor and retry it forever); nothing is reported as done."""

import os
import signal
import sys

import pytest
import ray.cloudpickle
from conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
import sampler_scale  # noqa: E402  (the stand-in engine: made-up tokens, no model)

from upft_ray.config import load_config  # noqa: E402
from upft_ray.engine.pool import ENGINE_BATCH_RETRIES  # noqa: E402
from upft_ray.sampling.stage import run_sample  # noqa: E402

POISON = "(#5)"  # a question of chunk 2 (rows_per_shard 2)


class DeadlyEngine(sampler_scale.StandInEngine):
    """Dies (the whole actor process, as a crashed engine core makes it) on every batch holding POISON."""

    death_log = ""  # set by the test; the class travels to the actors by value, with it

    async def __call__(self, batch: dict) -> dict:
        if any(POISON in m for m in batch["messages"]):
            with open(self.death_log, "a") as fh:
                fh.write(f"{os.getpid()}\n")
            os._exit(1)
        return await super().__call__(batch)


def _give_up(*_):
    raise TimeoutError("the poisoned run did not fail within 240 s: retries without end?")


def test_a_chunk_that_kills_every_engine_fails_the_run(tmp_path, ray_local):
    for module in (sampler_scale, sys.modules[__name__]):
        ray.cloudpickle.register_pickle_by_value(module)  # Ray workers cannot import the tests or bench/
    deaths = tmp_path / "deaths.log"
    DeadlyEngine.death_log = str(deaths)
    source = tmp_path / "questions.jsonl"
    sampler_scale.write_questions(source, 12)
    cfg = load_config(None, [f"run_dir={tmp_path / 'run'}", f"sample.questions={source}", "sample.rows_per_shard=2",
                             "sample.max_new_tokens=8", "sample.engine.max_batches_in_flight=1",
                             "sample.engine.cpus_per_replica=1", "model=smollm2-135m-instruct"])
    previous = signal.signal(signal.SIGALRM, _give_up)
    signal.alarm(240)
    try:
        with pytest.raises(Exception) as failed:
            run_sample(cfg, engine_cls=DeadlyEngine)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert not isinstance(failed.value, TimeoutError), failed.value
    assert len(deaths.read_text().split()) == ENGINE_BATCH_RETRIES + 1  # the first try and every retry
    assert not (tmp_path / "run" / "sample" / "manifest.json").exists()
