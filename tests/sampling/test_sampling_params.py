"""Sampling parameters: ``model`` takes the model's generation_config (explicit values win, a documented
fallback where it is silent), the resolved values reach vLLM, the manifest and the run's config hash."""

import json
import shutil

import pandas as pd
import pytest
from conftest import tiny_overrides

from upft_ray.config import load_config
from upft_ray.config.hashing import sample_config_hash
from upft_ray.engine.models import GENERATION_FALLBACK, generation_defaults
from upft_ray.engine.settings import vllm_top_k
from upft_ray.sampling.requests import build_requests, resolve_sampling
from upft_ray.sampling.stage import run_sample


def _model_dir(tmp_path, generation: dict | None):
    path = tmp_path / "model"
    path.mkdir()
    if generation is not None:
        (path / "generation_config.json").write_text(json.dumps(generation))
    return path


def test_generation_config_values_are_read(tmp_path):
    path = _model_dir(tmp_path, {"temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05})
    got = generation_defaults(str(path))
    assert (got["temperature"], got["top_p"], got["top_k"]) == (0.7, 0.8, 20)
    assert isinstance(got["top_k"], int) and "fallback" not in got["source"]


def test_fields_the_generation_config_leaves_unset_take_the_fallback(tmp_path):
    got = generation_defaults(str(_model_dir(tmp_path, {"bos_token_id": 1, "top_p": 0.95})))
    assert got["top_p"] == 0.95
    assert (got["temperature"], got["top_k"]) == (GENERATION_FALLBACK["temperature"], GENERATION_FALLBACK["top_k"])
    assert "fallback: temperature, top_k" in got["source"]


def test_a_model_without_generation_config_gets_the_fallback(tmp_path):
    got = generation_defaults(str(_model_dir(tmp_path, None)))
    assert {k: got[k] for k in GENERATION_FALLBACK} == GENERATION_FALLBACK == {"temperature": 1.0, "top_p": 1.0,
                                                                              "top_k": 50}
    assert "no generation_config.json" in got["source"]


def test_explicit_values_win_over_the_model(tmp_path):
    path = _model_dir(tmp_path, {"temperature": 0.7, "top_p": 0.8, "top_k": 20})
    sample = load_config(None, ["sample.temperature=0.6"]).sample
    assert (sample.temperature, sample.top_p, sample.top_k) == (0.6, "model", "model")
    resolved, record = resolve_sampling(sample, str(path))
    assert (resolved.temperature, resolved.top_p, resolved.top_k) == (0.6, 0.8, 20)
    assert record["from_model"] == ["top_p", "top_k"] and record["temperature"] == 0.6
    explicit = load_config(None, ["sample.temperature=0.3", "sample.top_p=1.0", "sample.top_k=0"]).sample
    # nothing says "model": the model is not read at all (this path does not exist)
    resolved, record = resolve_sampling(explicit, str(tmp_path / "absent"))
    assert (resolved.temperature, resolved.top_p, resolved.top_k) == (0.3, 1.0, 0) and record["source"] == "config"


def test_the_hash_sees_resolved_values(tmp_path):
    path = _model_dir(tmp_path, {"top_p": 0.8, "top_k": 20, "temperature": 0.6})
    by_model = load_config(None)
    resolved = by_model.model_copy(update={"sample": resolve_sampling(by_model.sample, str(path))[0]})
    same = load_config(None, ["sample.temperature=0.6", "sample.top_p=0.8", "sample.top_k=20"])
    other = load_config(None, ["sample.temperature=0.6", "sample.top_p=0.9", "sample.top_k=20"])
    assert sample_config_hash(resolved) == sample_config_hash(same) != sample_config_hash(other)


def test_requests_carry_top_k_and_vllm_gets_minus_one_for_off():
    sample = load_config(None, ["sample.temperature=0.6", "sample.top_p=0.8", "sample.top_k=20"]).sample
    rows = [{"id": "q1", "question": "What is 1+1?", "answer": "2"}]
    assert [(r["temperature"], r["top_p"], r["top_k"]) for r in build_requests(rows, sample, 42)] == [(0.6, 0.8, 20)]
    assert [vllm_top_k(k) for k in (0, -1, 1, 20)] == [-1, -1, 1, 20]


def test_bad_sampling_values_are_named():
    from upft_ray.config import ConfigError

    with pytest.raises(ConfigError) as err:
        load_config(None, ["sample.top_k=-2", "sample.top_p=modle", "sample.temperature=hot"])
    text = str(err.value)
    assert "sample.top_k: -2 is below the minimum -1" in text
    assert "sample.top_p: expected float or one of ['model'], got 'modle'" in text
    assert "sample.temperature: expected float or one of ['model']" in text


@pytest.mark.slow  # a vLLM engine start (~2 min on 2 cores); the default suite's real sampling test checks the fallback
def test_real_sampling_uses_and_records_the_models_values(tmp_path, tiny_model_dir, ray_local):
    model = tmp_path / "tiny"
    shutil.copytree(tiny_model_dir, model)
    generation = json.loads((model / "generation_config.json").read_text())
    (model / "generation_config.json").write_text(json.dumps({**generation, "top_p": 0.8, "top_k": 20}))
    overrides = tiny_overrides(tmp_path / "run", model) + ["sample.max_questions=6", "sample.max_new_tokens=8",
                                                            "sample.prefix_tokens=3", "sample.temperature=0.6"]
    manifest = run_sample(load_config(None, overrides))
    params = manifest["sampling_params"]
    assert (params["temperature"], params["top_p"], params["top_k"]) == (0.6, 0.8, 20)
    assert params["from_model"] == ["top_p", "top_k"] and str(model) in params["source"]
    assert (manifest["config"]["top_p"], manifest["config"]["top_k"]) == (0.8, 20)
    rows = pd.read_parquet(tmp_path / "run" / "sample" / "shards")
    assert len(rows) == 6 and {json.loads(p)["top_k"] for p in rows.sampling_params} == {20}
    # The same numbers written out explicitly are the same run: it resumes with nothing to do.
    again = run_sample(load_config(None, overrides + ["sample.top_p=0.8", "sample.top_k=20"]))
    assert again["config_hash"] == manifest["config_hash"] and again["shards"]["written"] == 0
    # A changed generation_config is another run: refused, not mixed into the same directory.
    (model / "generation_config.json").write_text(json.dumps({**generation, "top_p": 0.9, "top_k": 20}))
    with pytest.raises(ValueError):
        run_sample(load_config(None, overrides))
