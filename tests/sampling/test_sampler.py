"""Sampling: the seeded prefix/full split, the prompts, and a real vLLM run through Ray Data."""

import json

import duckdb
import pandas as pd
import pyarrow.parquet as pq

from conftest import tiny_overrides
from upft_ray.config import load_config
from upft_ray.sampling.sampler import build_requests, draw_kind, run_sample
from upft_ray.schema import SAMPLE_SCHEMA
from upft_ray.templates import UPFT_TASK_TEMPLATE


def test_draw_kind_is_seeded_and_close_to_the_ratio():
    ids = [f"q{i}" for i in range(4000)]
    kinds = [draw_kind(i, 42, 0.1) for i in ids]
    assert kinds == [draw_kind(i, 42, 0.1) for i in ids]
    assert 0.085 < kinds.count("full") / len(ids) < 0.115
    assert kinds != [draw_kind(i, 7, 0.1) for i in ids]
    assert set(draw_kind(i, 42, 0.0) for i in ids) == {"prefix"}
    assert set(draw_kind(i, 42, 1.0) for i in ids) == {"full"}


def test_requests_put_the_template_on_prefix_rows_only():
    cfg = load_config(None, ["sample.structure_ratio=0.5", "sample.prefix_tokens=8", "sample.max_new_tokens=99"])
    rows = [{"id": f"q{i}", "question": f"What is {i}+1?", "answer": str(i + 1)} for i in range(40)]
    for req in build_requests(rows, cfg):
        train_user = json.loads(req["train_messages"])[-1]["content"]
        sent_user = json.loads(req["messages"])[-1]["content"]
        assert sent_user == req["question"]  # the sampler sees the plain question
        if req["kind"] == "prefix":
            assert req["max_tokens"] == 8 and train_user == req["question"] + UPFT_TASK_TEMPLATE
        else:
            assert req["max_tokens"] == 99 and train_user == req["question"] and req["task_template"] == ""


def test_real_vllm_sampling_writes_readable_shards(tmp_path, tiny_model_dir, ray_local):
    cfg = load_config(None, tiny_overrides(tmp_path / "run", tiny_model_dir) + ["sample.prefix_tokens=4"])
    manifest = run_sample(cfg)
    shards = tmp_path / "run" / "sample" / "shards"
    table = pq.read_table(shards)
    assert table.schema.equals(SAMPLE_SCHEMA, check_metadata=False)
    df = pd.read_parquet(shards)
    counts = manifest["counts"]
    assert counts["rows_in"] == 24 == counts["rows_written"] + counts["rows_rejected"]
    prefix, full = df[df.kind == "prefix"], df[df.kind == "full"]
    assert len(prefix) == counts["prefix_rows"] and len(full) == counts["full_rows"] > 0
    assert (prefix.num_response_tokens <= 4).all()
    assert ((prefix.num_response_tokens == 4) | (prefix.finish_reason == "stop")).all()
    assert (df.num_response_tokens == df.response_token_ids.map(len)).all()
    assert manifest["tokens"]["generated"] == int(df.num_response_tokens.sum())
    assert duckdb.sql(f"select count(*) from '{shards}/*.parquet'").fetchall() == [(len(df),)]
    import datasets

    loaded = datasets.load_dataset("parquet", data_files=str(shards / "*.parquet"), split="train")
    assert loaded.num_rows == len(df)
