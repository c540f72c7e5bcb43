"""A corpus of bad question records: each is a question or a rejected row with its reason, never a
stopped run. Every case goes through both readers (``load_questions`` for small sets, the sampler's
plan + chunk reader for large ones) and must balance: records read = questions kept + rows rejected."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from upft_ray.config.columns import Columns
from upft_ray.io.questions import load_questions, question_id
from upft_ray.sampling.plan import make_plan
from upft_ray.sampling.requests import SampleContext, read_chunk

GOOD = [{"id": "g1", "question": "What is 1 + 1?", "answer": "2"},
        {"id": "g2", "question": "What is 2 + 3?", "answer": "5"}]
DEEP = 5000  # far beyond the json module's recursion limit


def _line(obj) -> bytes:
    return json.dumps(obj).encode()


# (case name, the bad line's bytes, expected: "kept" or a substring of the rejection reason ("" = any))
JSONL_CASES = [
    ("bare-empty-string", b'""', "not an object"),
    ("bare-blank-string", b'" "', "not an object"),
    ("bare-question-string", b'"What is 2 + 2?"', "not an object"),
    ("bare-int", b"42", "not an object"),
    ("bare-float", b"3.5", "not an object"),
    ("bare-null", b"null", "not an object"),
    ("bare-true", b"true", "not an object"),
    ("bare-nan", b"NaN", "not an object"),
    ("bare-huge-number", b"1e999999", "not an object"),
    ("bare-list", b'["What is 2 + 2?"]', "not an object"),
    ("empty-list", b"[]", "not an object"),
    ("empty-object", b"{}", "question"),
    ("deep-list", b"[" * DEEP + b"]" * DEEP, ""),
    ("deep-object", b'{"a":' * DEEP + b"1" + b"}" * DEEP, ""),
    ("deep-question-field", b'{"question": ' + b"[" * DEEP + b"]" * DEEP + b"}", ""),
    ("near-limit-answer", b'{"id": "n", "question": "Q?", "answer": ' + b"[" * 950 + b"]" * 950 + b"}", "answer"),
    ("near-limit-extra-field", b'{"id": "n2", "question": "Q?", "meta": ' + b"[" * 950 + b"]" * 950 + b"}", "kept"),
    ("invalid-utf8", b'{"id": "u", "question": "caf\xe9 \xff\xfe?"}', "UTF-8"),
    ("raw-nul-byte", b'{"id": "z", "question": "a\x00b"}', ""),
    ("escaped-nul", _line({"id": "z2", "question": "a\u0000b?"}), "NUL"),
    ("nul-line", b"\x00\x00\x00", ""),
    ("lone-surrogate-question", b'{"id": "s1", "question": "bad \\ud800 text"}', "question"),
    ("lone-surrogate-answer", b'{"id": "s2", "question": "Q?", "answer": "\\udfff"}', "answer"),
    ("lone-surrogate-id", b'{"id": "\\ud83d", "question": "Q?"}', "id"),
    ("huge-int-answer", b'{"id": "h", "question": "Q?", "answer": ' + b"7" * 5000 + b"}", ""),
    ("huge-int-id", b'{"id": ' + b"7" * 5000 + b', "question": "Q?"}', ""),
    ("empty-question", _line({"id": "e", "question": ""}), "question"),
    ("blank-question", _line({"id": "e", "question": " \t\n "}), "question"),
    ("question-int", _line({"id": "e", "question": 7}), "question"),
    ("question-list", _line({"id": "e", "question": ["What?"]}), "question"),
    ("question-object", _line({"id": "e", "question": {"text": "What?"}}), "question"),
    ("question-bool", _line({"id": "e", "question": True}), "question"),
    ("question-null", _line({"id": "e", "question": None}), "question"),
    ("question-missing", _line({"id": "e", "answer": "1"}), "question"),
    ("answer-nan", b'{"id": "e", "question": "Q?", "answer": NaN}', "answer"),
    ("answer-inf", b'{"id": "e", "question": "Q?", "answer": Infinity}', "answer"),
    ("answer-bool", _line({"id": "e", "question": "Q?", "answer": False}), "answer"),
    ("answer-object", _line({"id": "e", "question": "Q?", "answer": {"x": 1}}), "answer"),
    ("id-float", _line({"id": 1.5, "question": "Q?"}), "id"),
    ("id-bool", _line({"id": True, "question": "Q?"}), "id"),
    ("id-list", _line({"id": [1], "question": "Q?"}), "id"),
    ("id-empty", _line({"id": "", "question": "Q?"}), "id"),
    ("id-blank", _line({"id": "   ", "question": "Q?"}), "id"),
    ("id-collides", _line({"id": "g1", "question": "Another question?"}), "duplicate"),
    ("int-id-collides-with-str", _line({"id": 5, "question": "Q5?"}) + b"\n" + _line({"id": "5", "question": "Q5b?"}),
     "duplicate"),
    ("derived-id-collides", _line({"question": "Same?"}) + b"\n" + _line({"question": "Same?"}), "duplicate"),
    ("truncated-object", b'{"id": "t", "question": "Q?"', "JSON"),
    ("trailing-garbage", b'{"id": "t", "question": "Q?"} x', "JSON"),
    ("two-objects", b'{"question": "a?"}{"question": "b?"}', "JSON"),
    ("bom-mid-file", b"\xef\xbb\xbf" + _line({"id": "b", "question": "After a BOM?"}), "kept"),
    ("crlf", _line({"id": "c", "question": "CRLF?"}) + b"\r", "kept"),
    ("id-null-derived", _line({"id": None, "question": "No id?"}), "kept"),
    ("unicode-question", _line({"id": "x", "question": "Wie viel ist 2 + 2? \u2028 \U0001f600"}), "kept"),
]


def _jsonl(tmp_path, bad: bytes, bom: bool = False):
    path = tmp_path / "q.jsonl"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + _line(GOOD[0]) + b"\n" + bad + b"\n" + _line(GOOD[1]) + b"\n")
    return path


def _plan_requests(source: str, columns: Columns = Columns()) -> tuple[int, pd.DataFrame]:
    """Read ``source`` as the sampler does: plan it into chunks, then read each chunk into requests."""
    from upft_ray.config import load_config

    plan = make_plan(source, columns, rows_per_shard=2, max_records=0, config_hash="h")
    cfg = load_config(None, ["sample.structure_ratio=0.5"])
    parts = [read_chunk(c, SampleContext(cfg.sample, cfg.seed, cfg.model)) for c in plan.chunks]
    return plan.records, pd.concat(parts, ignore_index=True)


def _check_both_readers(source: str, n_bad: int, expected: str, columns: Columns = Columns()) -> None:
    qs = load_questions(source, columns)
    records, reqs = _plan_requests(source, columns)
    assert qs.num_read == records == 2 + n_bad
    kept_ids = [r["id"] for r in qs.rows]
    assert kept_ids[0] == "g1" and kept_ids[-1] == "g2"
    if expected == "kept":
        assert not qs.rejected, qs.rejected
    else:
        assert qs.rejected, "the bad record was kept"
        for row in qs.rejected:
            assert row["reason"].strip() and expected.lower() in row["reason"].lower(), row
            assert isinstance(row["raw"], str) and len(row["raw"]) <= 2000
    # The sampler's path: one row per record at least, every record accounted for, no empty request.
    assert reqs["number"].nunique() == records
    rejected = reqs[reqs.reject_reason != ""]
    assert rejected["number"].nunique() == len(qs.rejected)
    ok = reqs[reqs.reject_reason == ""]
    assert sorted(set(ok.question_id)) == sorted(kept_ids)
    for messages, question in zip(ok.messages, ok.question):
        assert isinstance(question, str) and question.strip()
        assert json.loads(messages)[-1]["content"] == question


@pytest.mark.parametrize("name,bad,expected", JSONL_CASES, ids=[c[0] for c in JSONL_CASES])
def test_bad_jsonl_record_is_rejected_or_kept_never_fatal(tmp_path, name, bad, expected):
    _check_both_readers(str(_jsonl(tmp_path, bad)), bad.count(b"\n") + 1, expected)


def test_bom_at_file_start_costs_no_record(tmp_path):
    path = _jsonl(tmp_path, _line({"id": "mid", "question": "Middle?"}), bom=True)
    qs = load_questions(str(path))
    assert [r["id"] for r in qs.rows] == ["g1", "mid", "g2"] and not qs.rejected
    records, reqs = _plan_requests(str(path))
    assert records == 3 and (reqs.reject_reason == "").all()


def test_bare_string_record_is_not_taken_for_a_reader_error(tmp_path):
    path = _jsonl(tmp_path, b'"invalid JSON: Expecting value (column 1)"')
    (row,) = load_questions(str(path)).rejected
    assert "str" in row["reason"] and "invalid JSON" not in row["reason"]


def test_reasons_count_by_kind_and_keep_the_raw_line(tmp_path):
    path = _jsonl(tmp_path, b'{"question": "a"' + b"\n" + b"[" * DEEP + b"]" * DEEP)
    qs = load_questions(str(path))
    truncated, deep = qs.rejected
    assert truncated["raw"].startswith('{"question": "a"') and truncated["line"] == 2
    assert "deep" in deep["reason"] and deep["line"] == 3 and deep["raw"].startswith("[[[")


# (case name, a table of two good rows plus the bad ones, expected as above, number of bad rows)
def _table_cases():
    ok = {"id": ["g1", "g2"], "question": [GOOD[0]["question"], GOOD[1]["question"]], "answer": ["2", "5"]}

    def with_rows(rows: dict) -> pa.Table:
        return pa.table({k: pa.array([ok[k][0], *v, ok[k][1]], pa.string()) for k, v in rows.items()})

    bad_utf8 = pa.Array.from_buffers(pa.string(), 3, [None, pa.py_buffer(
        b"".join(i.to_bytes(4, "little") for i in (0, 14, 16, 30))), pa.py_buffer(
        GOOD[0]["question"].encode() + b"\xff\xfe" + GOOD[1]["question"].encode())])
    return [
        ("question-null", with_rows({"id": ["b"], "question": [None], "answer": ["1"]}), "question", 1),
        ("question-empty", with_rows({"id": ["b", "c"], "question": ["", "  "], "answer": ["1", "1"]}), "question", 2),
        ("question-nul", with_rows({"id": ["b"], "question": ["a\x00b?"], "answer": ["1"]}), "NUL", 1),
        ("question-int-column", pa.table({"id": ["g1", "b", "g2"], "question": [1, 2, 3]}), "question", 3),
        ("question-list-column", pa.table({"id": ["g1", "b", "g2"], "question": [["a"], ["b"], ["c"]]}), "question", 3),
        ("question-struct-column", pa.table({"id": ["g1", "g2"], "question": [{"t": "a"}, {"t": "b"}]}), "question", 2),
        ("question-binary-column", pa.table({"id": ["g1", "g2"], "question": pa.array([b"a?", b"b?"], pa.binary())}),
         "question", 2),
        ("question-invalid-utf8", pa.table({"id": ["g1", "b", "g2"], "question": bad_utf8}), "UTF-8", 1),
        ("answer-float-nan", pa.table({"id": ["g1", "b", "g2"], "question": ["1+1?", "Q?", "2+3?"],
                                       "answer": [2.0, float("nan"), 5.0]}), "answer", 1),
        ("id-float-column", pa.table({"id": [1.0, float("nan"), 2.5], "question": ["a?", "b?", "c?"]}), "id", 3),
        ("id-bool-column", pa.table({"id": [True, False], "question": ["a?", "b?"]}), "id", 2),
        ("id-duplicate", with_rows({"id": ["g1"], "question": ["Again?"], "answer": ["1"]}), "duplicate", 1),
        ("id-null-derived", with_rows({"id": [None], "question": ["Derived?"], "answer": ["1"]}), "kept", 1),
        ("answer-null", with_rows({"id": ["b"], "question": ["No gold?"], "answer": [None]}), "kept", 1),
    ]


TABLE_CASES = _table_cases()


@pytest.mark.parametrize("name,table,expected,n_bad", TABLE_CASES, ids=[c[0] for c in TABLE_CASES])
def test_bad_parquet_rows_are_rejected_or_kept_never_fatal(tmp_path, name, table, expected, n_bad):
    path = tmp_path / "q.parquet"
    pq.write_table(table, path, row_group_size=2)
    qs = load_questions(str(path))
    records, reqs = _plan_requests(str(path))
    assert qs.num_read == records == table.num_rows
    assert reqs["number"].nunique() == records
    assert len(qs.rejected) == (0 if expected == "kept" else n_bad), qs.rejected
    for row in qs.rejected:
        assert row["reason"].strip() and expected.lower() in row["reason"].lower(), row
    assert set(reqs[reqs.reject_reason == ""].question_id) == {r["id"] for r in qs.rows}


def test_bad_rows_in_an_hf_save_to_disk_set(tmp_path):
    import datasets

    rows = [GOOD[0], {"id": "b", "question": None, "answer": "1"}, {"id": "c", "question": "  ", "answer": "1"},
            {"id": "g1", "question": "Dup?", "answer": "1"}, GOOD[1]]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "hf"))
    qs = load_questions(str(tmp_path / "hf"))
    records, reqs = _plan_requests(str(tmp_path / "hf"))
    assert [r["id"] for r in qs.rows] == ["g1", "g2"] and len(qs.rejected) == 3 and records == 5
    assert reqs.number.nunique() == 5 and set(reqs[reqs.reject_reason == ""].question_id) == {"g1", "g2"}


def test_a_file_of_only_bad_records_names_the_missing_field(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_bytes(b'""\n42\n[' + b"[" * DEEP + b"\n\xff\n")
    with pytest.raises(ValueError, match="no record has the field 'question'"):
        load_questions(str(path))


def test_derived_ids_are_stable(tmp_path):
    path = _jsonl(tmp_path, _line({"question": "No id?"}))
    assert load_questions(str(path)).rows[1]["id"] == question_id("No id?")


def test_real_cli_samples_the_good_records_of_a_hostile_file(tmp_path, tiny_model_dir):
    """`upft sample` as a user runs it (its own Ray, the tiny model): every class of bad record is a
    rejected row with its reason, the good ones (the BOM-prefixed first line included) are sampled."""
    import subprocess
    import sys

    from conftest import REPO

    good = [_line({"id": f"ok{i}", "question": f"What is {i} + 2?", "answer": i + 2}) for i in range(4)]
    bad = [b'""', b'" "', b'"What is 2 + 2?"', b"42", b"null", b"[" * DEEP + b"]" * DEEP,
           b'{"id": "u", "question": "caf\xe9?"}', b'{"id": "s", "question": "bad \\ud800"}',
           _line({"id": "z", "question": "a\u0000b"}), b'{"id": "n", "question": "Q?", "answer": NaN}',
           _line({"id": "ok1", "question": "Same id again?"}), b'{"id": "t", "question": "Q?"']
    source = tmp_path / "hostile.jsonl"
    source.write_bytes(b"\xef\xbb\xbf" + b"\n".join(good[:2] + bad + good[2:]) + b"\n")
    run = tmp_path / "run"
    out = subprocess.run([sys.executable, "-m", "upft_ray.cli", "sample", f"run_dir={run}", f"model={tiny_model_dir}",
                          f"sample.questions={source}", "sample.max_new_tokens=8", "sample.prefix_tokens=4",
                          "sample.rows_per_shard=5", "sample.engine.max_model_len=256", "ray.num_cpus=2"],
                         capture_output=True, text=True, cwd=REPO, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]

    def refuse(token):
        raise AssertionError(f"manifest.json holds {token}")

    manifest = json.loads((run / "sample" / "manifest.json").read_text(), parse_constant=refuse)
    c = manifest["counts"]
    assert c["rows_in"] == len(good) + len(bad) == c["questions_written"] + c["rows_rejected"]
    assert c["questions_written"] == len(good) and c["rows_rejected"] == len(bad)
    rejected = pd.read_parquet(run / "sample" / "rejected.parquet").sort_values("line")
    assert list(rejected.line) == list(range(3, 3 + len(bad)))
    assert all(reason.strip() for reason in rejected.reason)
    assert rejected.reason.iloc[0].startswith("row is str, not an object")
    shards = pd.read_parquet(run / "sample" / "shards")
    assert sorted(set(shards.question_id)) == [f"ok{i}" for i in range(4)]
