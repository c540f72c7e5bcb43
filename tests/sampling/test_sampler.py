"""Sampling: the seeded prefix/full split, the prompts, and a real vLLM run through Ray Data."""

import json

import duckdb
import pandas as pd
import pyarrow.parquet as pq
from conftest import tiny_overrides

from upft_ray.config import load_config
from upft_ray.config.types import UPFT_TASK_TEMPLATE
from upft_ray.io.schema import SAMPLE_SCHEMA
from upft_ray.sampling.requests import build_requests, draw_kind
from upft_ray.sampling.stage import run_sample


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
    for req in build_requests(rows, cfg.sample, cfg.seed):
        train_user = json.loads(req["train_messages"])[-1]["content"]
        sent_user = json.loads(req["messages"])[-1]["content"]
        assert sent_user == req["question"]  # the sampler sees the plain question
        if req["kind"] == "prefix":
            assert req["max_tokens"] == 8 and train_user == req["question"] + UPFT_TASK_TEMPLATE
        else:
            assert req["max_tokens"] == 99 and train_user == req["question"] and req["task_template"] == ""


def test_each_request_carries_a_seed_from_seed_question_and_sample_index():
    cfg = load_config(None, ["sample.num_samples=3"])
    rows = [{"id": f"q{i}", "question": f"What is {i}+1?", "answer": str(i + 1)} for i in range(10)]
    seeds = {(r["question_id"], r["sample_index"]): r["request_seed"] for r in build_requests(rows, cfg.sample, 42)}
    assert len(set(seeds.values())) == 30  # every (question, sample) draws its own
    # Independent of which other questions share the chunk, and of their order: a redone chunk redraws them.
    alone = build_requests(rows[7:8], cfg.sample, 42) + build_requests(rows[::-1], cfg.sample, 42)
    assert all(seeds[(r["question_id"], r["sample_index"])] == r["request_seed"] for r in alone)
    assert build_requests(rows[:1], cfg.sample, 43)[0]["request_seed"] != seeds[("q0", 0)]


def test_sft_baseline_requests_are_full_solutions_without_template():
    cfg = load_config(None, ["sample.method=sft", "sample.structure_ratio=0.1", "sample.max_new_tokens=99"])
    rows = [{"id": f"q{i}", "question": f"What is {i}+1?", "answer": str(i + 1)} for i in range(40)]
    requests = build_requests(rows, cfg.sample, cfg.seed)
    assert len(requests) == 40 and {r["kind"] for r in requests} == {"full"}
    assert all(r["max_tokens"] == 99 and r["task_template"] == "" for r in requests)
    assert all(json.loads(r["train_messages"])[-1]["content"] == r["question"] for r in requests)


def test_rft_and_label_filter_requests_decode_whole_solutions():
    rows = [{"id": f"q{i}", "question": f"What is {i}+1?", "answer": str(i + 1)} for i in range(40)]
    rft = load_config(None, ["sample.method=rft", "sample.num_samples=4", "sample.max_new_tokens=99"]).sample
    requests = build_requests(rows, rft, 42)
    assert len(requests) == 160 and {r["kind"] for r in requests} == {"full"}
    assert {r["sample_index"] for r in requests} == {0, 1, 2, 3} and {r["max_tokens"] for r in requests} == {99}
    upft = load_config(None, ["sample.structure_ratio=0.3", "sample.max_new_tokens=99"]).sample
    label = load_config(None, ["sample.method=label_filter", "sample.structure_ratio=0.3",
                               "sample.max_new_tokens=99"]).sample
    for a, b in zip(build_requests(rows, upft, 42), build_requests(rows, label, 42)):
        assert a["kind"] == b["kind"] and a["train_messages"] == b["train_messages"]  # UPFT's draw and template
        assert b["max_tokens"] == 99  # ... but decoded whole, to be graded


def assert_readable_everywhere(shards, rows):
    """The shards open as they are in pyarrow, pandas, DuckDB and HF datasets."""
    import datasets

    assert pq.read_table(shards).num_rows == rows == len(pd.read_parquet(shards))
    assert duckdb.sql(f"select count(*) from '{shards}/*.parquet'").fetchall() == [(rows,)]
    loaded = datasets.load_dataset("parquet", data_files=str(shards / "*.parquet"), split="train")
    assert loaded.num_rows == rows


def test_real_vllm_sampling_writes_readable_shards(tmp_path, tiny_model_dir, ray_local):
    cfg = load_config(None, tiny_overrides(tmp_path / "run", tiny_model_dir) + ["sample.prefix_tokens=4",
                                                                               "sample.rows_per_shard=5"])
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
    assert_readable_everywhere(shards, len(df))
    # The tiny model's generation_config sets no sampling values: "model" takes the documented fallback.
    params = manifest["sampling_params"]
    assert (params["temperature"], params["top_p"], params["top_k"]) == (1.0, 1.0, 50) and "fallback" in params["source"]
    assert {json.loads(p)["top_k"] for p in df.sampling_params} == {50}
    # what `engine.dtype: auto` became on this CPU is recorded (bf16 where the CPU has native bf16, else fp32)
    from upft_ray.engine.settings import engine_dtype
    assert manifest["engine_dtypes"] == [engine_dtype(cfg.sample.engine.dtype)]


def _malformed_file(path):
    """A JSONL file with valid rows and 14 kinds of bad ones; returns {line: expected reason start}."""
    good = [{"id": f"ok{i}", "question": f"What is {i} + 2?", "answer": i + 2} for i in range(6)]
    lines = [json.dumps(r) for r in good[:3]] + [
        "{not json",                                                        # 4
        json.dumps(["a", "list"]),                                          # 5
        json.dumps({"id": "m1", "answer": "1"}),                            # 6
        json.dumps({"id": "m2", "question": None}),                         # 7
        json.dumps({"id": "m3", "question": ""}),                           # 8
        json.dumps({"id": "m4", "question": "  \n "}),                      # 9
        json.dumps({"id": "m5", "question": 42}),                           # 10
        json.dumps({"id": "m6", "question": ["What?"]}),                    # 11
        json.dumps({"id": "m7", "question": "Q?", "answer": {"x": 1}}),     # 12
        json.dumps({"id": 1.5, "question": "Q?"}),                          # 13
        json.dumps({"id": "ok1", "question": "Same id again?"}),            # 14
        '{"id": "m8", "question": "bad \\ud800 text"}',                     # 15
        json.dumps({"id": "m9", "question": "How many? " * 200}),           # 16: prompt too long
        "",                                                                 # 17: blank, not a record
    ] + [json.dumps(r) for r in good[3:]]
    path.write_text("\n".join(lines) + "\n")
    path.write_bytes(path.read_bytes() + b'{"id": "m10", "question": "caf\xe9?"}\n')  # 21: not UTF-8
    return {4: "invalid JSON", 5: "row is list, not an object", 6: "missing field 'question'",
            7: "missing field 'question'", 8: "field 'question' is empty", 9: "field 'question' is empty",
            10: "field 'question' is int, not a string", 11: "field 'question' is list, not a string",
            12: "field 'answer' is dict, not a string or number", 13: "field 'id' is float, not a string or integer",
            14: "duplicate id: 'ok1', first at", 15: "field 'question' is not valid Unicode text",
            16: "prompt too long: ", 21: "line is not valid UTF-8"}


def test_malformed_rows_balance_and_say_why(tmp_path, tiny_model_dir, ray_local):
    source = tmp_path / "bad.jsonl"
    expected = _malformed_file(source)
    cfg = load_config(None, tiny_overrides(tmp_path / "run", tiny_model_dir) + [
        f"sample.questions={source}", "sample.rows_per_shard=4", "sample.engine.max_model_len=256"])
    manifest = run_sample(cfg)
    c = manifest["counts"]
    assert c["rows_in"] == 20 == c["questions_written"] + c["rows_rejected"]
    assert c["questions_written"] == 6 and c["rows_rejected"] == len(expected) == 14
    assert sum(c["rejected_by_reason"].values()) == 14 and c["rejected_by_reason"]["duplicate id"] == 1
    rejected = pd.read_parquet(tmp_path / "run/sample/rejected.parquet").set_index("line")
    assert sorted(rejected.index) == sorted(expected)
    for line, reason in expected.items():
        assert rejected.loc[line, "reason"].startswith(reason), (line, rejected.loc[line, "reason"])
        assert rejected.loc[line, "source"] == str(source)
    written = pd.read_parquet(tmp_path / "run/sample/shards")
    assert sorted(written.question_id) == [f"ok{i}" for i in range(6)]
    assert_readable_everywhere(tmp_path / "run/sample/shards", 6)  # one shard is empty: still readable


def test_full_rows_follow_the_seeded_draw_and_carry_no_template(tmp_path, tiny_model_dir, ray_local):
    cfg = load_config(None, tiny_overrides(tmp_path / "run", tiny_model_dir) + [
        "sample.structure_ratio=0.3", "sample.prefix_tokens=3", "sample.num_samples=2"])
    run_sample(cfg)
    df = pd.read_parquet(tmp_path / "run/sample/shards")
    assert len(df) == 48 and (df.groupby("question_id").sample_index.nunique() == 2).all()
    expected_full = {q for q in df.question_id if draw_kind(q, cfg.seed, 0.3) == "full"}
    assert set(df[df.kind == "full"].question_id) == expected_full and expected_full
    full, prefix = df[df.kind == "full"], df[df.kind == "prefix"]
    assert (full.task_template == "").all()
    assert all(json.loads(m)[-1]["content"] == q for m, q in zip(full.train_messages, full.question))
    assert all(json.loads(m)[-1]["content"].endswith(UPFT_TASK_TEMPLATE) for m in prefix.train_messages)
    assert ((prefix.num_response_tokens == 3) | ((prefix.num_response_tokens < 3) & (prefix.finish_reason == "stop"))).all()
    assert (full.num_response_tokens > 3).any()
