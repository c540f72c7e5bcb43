"""Shared fixtures: a tiny random model (real architecture, SmolLM2 tokenizer), a local Ray, and the
bench/ scripts as modules."""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))  # the benchmarks' helpers (doc_blocks, synthetic, ...) and scripts
SLOW_TEST_TIMEOUT_S = 1500  # a default test has pyproject's timeout; a slow one (real engines, clusters) this


def pytest_collection_modifyitems(items):
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TEST_TIMEOUT_S))


def pytest_runtest_logstart(nodeid, location):
    """Say which test runs now in ``$UPFT_CI_STATUS`` (.ci/run prints it when its outer limit ends a hang)."""
    if os.environ.get("UPFT_CI_STATUS"):
        Path(os.environ["UPFT_CI_STATUS"]).write_text(f"{nodeid} (started {time.strftime('%H:%M:%S')})\n")


@pytest.fixture(scope="session")
def bench_script():
    """Return a loader: ``bench_script("quickstart_record")`` imports bench/quickstart_record.py as a module."""
    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The prepared bundled checkpoint (scripts/setup.sh prepares it; prepared here if missing)."""
    from upft_ray.engine.models import prepare_bundled_model

    return prepare_bundled_model("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, smollm2_dir) -> Path:
    """A 2-layer random Llama with SmolLM2's tokenizer and chat template, saved as an HF checkpoint."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=2048, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def worker_pythonpath() -> str:
    """The PYTHONPATH test Ray workers get: the stand-in engines of tests/engines.py and bench/ importable."""
    return os.pathsep.join(p for p in (str(REPO / "tests"), str(REPO / "bench"), os.environ.get("PYTHONPATH")) if p)


@pytest.fixture(scope="session")
def drill_root(tmp_path_factory) -> Path:
    """Where fault drills keep their settings and logs (``tests/engines.py``); the test Ray's workers know it."""
    return tmp_path_factory.mktemp("drill")


@pytest.fixture
def drill(drill_root):
    """Return a writer of this test's drill settings (``drill(poison="(#5)")``), with the drill dir cleared."""
    import json
    import shutil

    shutil.rmtree(drill_root, ignore_errors=True)
    drill_root.mkdir()

    def write(**settings) -> Path:
        (drill_root / "drill.json").write_text(json.dumps(settings))
        return drill_root
    return write


@pytest.fixture(scope="session")
def ray_local(drill_root):
    """One private local Ray for the session; 4 logical CPUs so actors and train workers fit on 2 cores."""
    import ray

    from upft_ray.runtime.ray_session import worker_env_vars

    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address="local", num_cpus=4, include_dashboard=True, dashboard_host="127.0.0.1",
             runtime_env={"env_vars": {**worker_env_vars(), "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
                                       "PYTHONPATH": worker_pythonpath(), "UPFT_DRILL_DIR": str(drill_root)}})
    yield
    ray.shutdown()


def tiny_overrides(run_dir: Path, model_dir: Path) -> list[str]:
    """Config overrides for a fast run of every stage on the tiny model."""
    return [f"run_dir={run_dir}", f"model={model_dir}", "sample.max_questions=24", "sample.max_new_tokens=16",
            "sample.structure_ratio=0.25", "sample.engine.max_model_len=512", "train.micro_batch_size=2",
            "train.max_length=256", "train.checkpoint_every_steps=3", "eval.max_questions=12",
            "eval.max_new_tokens=16", "eval.engine.max_model_len=512"]
