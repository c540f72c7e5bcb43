"""Reading question sources in chunks: every format gives the same records, duplicates are found,
and a saved plan is reused only for the same config and unchanged input."""

import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from upft_ray.config import load_config
from upft_ray.config.columns import Columns, preset_columns
from upft_ray.io.questions import question_id
from upft_ray.sampling.plan import load_plan, make_plan, plan_for_run
from upft_ray.sampling.requests import SampleContext, read_chunk

ROWS = [{"id": f"q{i}", "question": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(10)]


def _requests(plan, overrides=()):
    cfg = load_config(None, ["sample.structure_ratio=0.3", *overrides])
    batches = [read_chunk(c, SampleContext(cfg.sample, cfg.seed, cfg.model)) for c in plan.chunks]
    return pd.concat(batches, ignore_index=True)


def _write_all_formats(tmp_path):
    jsonl = tmp_path / "q.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in ROWS[:5]) + "\n\n" + "\n".join(json.dumps(r) for r in ROWS[5:]))
    parquet = tmp_path / "q.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), parquet, row_group_size=4)
    parts = tmp_path / "parts"
    parts.mkdir()
    (parts / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS[:6]))
    pq.write_table(pa.Table.from_pylist(ROWS[6:]), parts / "b.parquet")
    import datasets

    hf = tmp_path / "hf"
    datasets.Dataset.from_list(ROWS).save_to_disk(str(hf))
    return {"jsonl": str(jsonl), "parquet": str(parquet), "directory": str(parts), "glob": f"{parts}/*.jsonl",
            "hf": str(hf)}


def test_every_format_reads_every_record_once_in_chunks(tmp_path):
    sources = _write_all_formats(tmp_path)
    for name, source in sources.items():
        plan = make_plan(source, Columns(), rows_per_shard=3, max_records=0, config_hash="h")
        reqs = _requests(plan)
        expected = [r["id"] for r in ROWS[:6]] if name == "glob" else [r["id"] for r in ROWS]
        assert sorted(reqs.question_id) == sorted(expected), name
        assert plan.records == len(expected) == sum(c.records for c in plan.chunks), name
        assert all(c.records <= 3 for c in plan.chunks), name
        assert (reqs.reject_reason == "").all(), name
    # JSONL numbers are file lines: the blank line 6 is skipped but counted
    plan = make_plan(sources["jsonl"], Columns(), 3, 0, "h")
    assert list(_requests(plan).number) == [1, 2, 3, 4, 5, 7, 8, 9, 10, 11]


def test_max_questions_and_num_samples(tmp_path):
    source = _write_all_formats(tmp_path)["jsonl"]
    plan = make_plan(source, Columns(), rows_per_shard=4, max_records=7, config_hash="h")
    assert plan.records == 7 and [c.records for c in plan.chunks] == [4, 3]
    reqs = _requests(plan, ["sample.num_samples=3"])
    assert len(reqs) == 21
    assert all(sorted(v) == [0, 1, 2] for v in reqs.groupby("question_id").sample_index.apply(list))
    assert reqs.groupby("question_id").kind.nunique().eq(1).all()  # one kind per question


def test_duplicates_across_chunks_and_files_keep_the_first(tmp_path):
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS[:4]))
    (tmp_path / "b.jsonl").write_text(json.dumps({**ROWS[1], "question": "again"}) + "\n" +
                                      json.dumps({"question": "no id"}) + "\n" + json.dumps({"question": "no id"}) + "\n")
    plan = make_plan(str(tmp_path), Columns(), rows_per_shard=2, max_records=0, config_hash="h")
    reqs = _requests(plan)
    rejected = reqs[reqs.reject_reason != ""]
    assert len(rejected) == 2
    assert rejected.reject_reason.iloc[0] == f"duplicate id: 'q1', first at {tmp_path}/a.jsonl line 2"
    assert rejected.reject_reason.iloc[1] == f"duplicate id: '{question_id('no id')}', first at {tmp_path}/b.jsonl line 2"
    assert sorted(reqs[reqs.reject_reason == ""].question_id) == sorted(["q0", "q1", "q2", "q3", question_id("no id")])


def test_presets_map_omi2_rows(tmp_path):
    path = tmp_path / "omi2.parquet"
    pq.write_table(pa.table({"problem": ["1+1?", "2+2?"], "generated_solution": ["...", "..."],
                             "expected_answer": ["2", "4"], "problem_source": ["a", "b"]}), path)
    plan = make_plan(str(path), preset_columns("omi2"), 10, 0, "h")
    reqs = _requests(plan, ["sample.columns=omi2"])
    assert list(reqs.answer) == ["2", "4"] and list(reqs.question_id) == [question_id("1+1?"), question_id("2+2?")]
    assert preset_columns("omi2", answer="generated_solution").answer == "generated_solution"


def test_missing_column_and_unreadable_files_name_the_file(tmp_path):
    path = tmp_path / "q.parquet"
    pq.write_table(pa.table({"problem": ["1+1?"]}), path)
    with pytest.raises(ValueError, match=r"q\.parquet: no column 'question'"):
        make_plan(str(path), Columns(), 10, 0, "h")
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet at all")
    with pytest.raises(ValueError, match="broken.parquet"):
        make_plan(str(broken), Columns(), 10, 0, "h")
    jsonl = tmp_path / "q.jsonl"
    jsonl.write_text(json.dumps({"problem": "1+1?"}) + "\n")
    with pytest.raises(ValueError, match=r"q\.jsonl: no record has the field 'question'"):
        make_plan(str(jsonl), Columns(), 10, 0, "h")
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        make_plan(str(tmp_path / "nope.jsonl"), Columns(), 10, 0, "h")
    import datasets

    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(ValueError, match=r"DatasetDict with splits \['train'\]"):
        make_plan(str(tmp_path / "dd"), Columns(), 10, 0, "h")


def test_saved_plan_is_reused_only_for_the_same_config_and_input(tmp_path):
    source = tmp_path / "q.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    out = tmp_path / "sample"
    out.mkdir()
    plan, resumed = plan_for_run(out, str(source), Columns(), 4, 0, "hash-a")
    assert not resumed and (out / "plan.json").is_file()
    again, resumed = plan_for_run(out, str(source), Columns(), 4, 0, "hash-a")
    assert resumed and [c.to_json() for c in again.chunks] == [c.to_json() for c in plan.chunks]
    (out / "chunks").mkdir()
    (out / "chunks" / "chunk-000000.json").write_text("{}")  # a committed chunk: the plan is now the run's
    with pytest.raises(ValueError, match="another config"):
        plan_for_run(out, str(source), Columns(), 4, 0, "hash-b")
    source.write_text(source.read_text() + json.dumps({"id": "new", "question": "new?"}) + "\n")
    with pytest.raises(ValueError, match="input changed"):
        plan_for_run(out, str(source), Columns(), 4, 0, "hash-a")


def test_a_start_that_wrote_no_shard_does_not_block_the_corrected_command(tmp_path):
    source = tmp_path / "q.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    out = tmp_path / "sample"
    out.mkdir()
    plan_for_run(out, str(source), Columns(), 4, 0, "hash-a")  # the failed start: a plan, no shard
    (out / "shards").mkdir()
    (out / "shards" / "shard-000002.parquet").write_text("left by a chunk killed before its summary")
    plan, resumed = plan_for_run(out, str(source), Columns(), 3, 0, "hash-b")  # the corrected command
    assert not resumed and load_plan(out / "plan.json").config_hash == "hash-b" and len(plan.chunks) == 4
    assert not (out / "shards" / "shard-000002.parquet").exists()
    source.write_text(source.read_text() + json.dumps({"id": "new", "question": "new?"}) + "\n")
    plan, resumed = plan_for_run(out, str(source), Columns(), 3, 0, "hash-b")  # input changed, nothing written
    assert not resumed and plan.records == len(ROWS) + 1
    # once a chunk is committed the plan is the run's: another config or changed input is refused
    (out / "chunks").mkdir()
    (out / "chunks" / "chunk-000000.json").write_text("{}")
    with pytest.raises(ValueError, match="another config"):
        plan_for_run(out, str(source), Columns(), 3, 0, "hash-c")
    assert load_plan(out / "plan.json").config_hash == "hash-b"


def test_an_unreadable_source_leaves_no_plan(tmp_path):
    out = tmp_path / "sample"
    out.mkdir()
    bad = tmp_path / "q.jsonl"
    bad.write_text(json.dumps({"problem": "1+1?"}) + "\n")
    with pytest.raises(ValueError):
        plan_for_run(out, str(bad), Columns(), 4, 0, "hash-a")
    assert not (out / "plan.json").exists()


@pytest.mark.parametrize("error", [ZeroDivisionError("x"), RecursionError("deep"), UnicodeEncodeError(
    "utf-8", "\ud800", 0, 1, "surrogate"), MemoryError()])
def test_a_record_whose_requests_cannot_be_built_is_rejected_alone(tmp_path, monkeypatch, error):
    from upft_ray.sampling import requests

    source = tmp_path / "q.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    real = requests.build_requests

    def build(rows, sample, seed):
        if rows[0]["id"] in ("q3", "q7"):
            raise error
        return real(rows, sample, seed)

    monkeypatch.setattr(requests, "build_requests", build)
    reqs = _requests(make_plan(str(source), Columns(), rows_per_shard=4, max_records=0, config_hash="h"))
    bad = reqs[reqs.reject_reason != ""]
    assert list(bad.number) == [4, 8] and len(bad) == 2  # one row per rejected record, with its line
    assert all(r.startswith(f"request_build_error: {type(error).__name__}") for r in bad.reject_reason)
    assert sorted(reqs[reqs.reject_reason == ""].question_id) == [r["id"] for r in ROWS if r["id"] not in ("q3", "q7")]
