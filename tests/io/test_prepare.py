"""`upft data prepare`: each public release, written here in its own layout, becomes a question file that
the sampler (training sets) or the registered benchmark (benchmarks) accepts as it is; bad rows are
rejected with reasons, repeats counted, and read = written + rejected + duplicates in every manifest."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from upft_ray.cli import app
from upft_ray.config.columns import Columns
from upft_ray.evaluation.benchmarks import BENCHMARKS, load_benchmark
from upft_ray.io.prepare import prepare_public_set
from upft_ray.io.public_sets import BENCHMARK, PUBLIC_SETS
from upft_ray.io.questions import load_questions, question_id
from upft_ray.io.sources import check_readable, list_source_files, scan_records

GPQA_EXTRA = ["Pre-Revision Question", "Pre-Revision Correct Answer", "Explanation", "Subdomain",
              "Writer's Difficulty Estimate", "High-level domain", "Canary String"]


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def rejected(out, name):
    return [json.loads(line) for line in (out / f"{name}.rejected.jsonl").read_text().splitlines()]


def check_counts(manifest, read, written, rejected_rows=0, duplicates=0):
    assert (manifest["rows_read"], manifest["rows_written"], manifest["rows_rejected"], manifest["duplicates"]) == \
        (read, written, rejected_rows, duplicates)
    assert manifest["rows_read"] == manifest["rows_written"] + manifest["rows_rejected"] + manifest["duplicates"]
    assert sum(manifest["rejected_by_reason"].values()) == manifest["rows_rejected"]


def prm_row(i, **kw):
    row = {"problem": f"What is {i} + {i}?", "solution": f"It is $\\boxed{{{2 * i}}}$.", "answer": str(2 * i),
           "subject": "Algebra", "level": 1 + i % 5, "unique_id": f"train/algebra/{i}.json"}
    return {**row, **kw}


def test_prm12k_from_the_release_directory(tmp_path):
    rows = [prm_row(i) for i in range(5)] + [
        prm_row(5, answer="  "),                                  # blank answer
        prm_row(6, problem=7),                                    # non-string question
        prm_row(7, problem="What is \x00?"),                      # NUL
        {k: v for k, v in prm_row(8).items() if k != "unique_id"},  # no id
        prm_row(0),                                               # the same row again: a duplicate
        prm_row(9, unique_id="train/algebra/1.json"),             # an id taken by another question
        "{not json",
    ]
    write_jsonl(tmp_path / "release" / "prm800k" / "math_splits" / "train.jsonl", rows)
    out = tmp_path / "out"
    m = prepare_public_set("prm12k", str(tmp_path / "release"), out)
    check_counts(m, read=12, written=5, rejected_rows=6, duplicates=1)
    assert m["layout_read"]["how"] == "release file prm800k/math_splits/train.jsonl in the directory"
    assert m["expected_rows"] == 12_000 and m["matches_paper"] is False
    reasons = {r["line"]: r["reason"] for r in rejected(out, "prm12k")}
    assert reasons == {6: "field 'answer' is empty", 7: "field 'problem' is int, not a string",
                       8: "field 'problem' contains a NUL character", 9: "missing field 'unique_id'",
                       11: "duplicate id with a different question (the first is kept): 'train/algebra/1.json'",
                       12: reasons[12]}
    assert reasons[12].startswith("invalid JSON")
    qs = load_questions(str(out / "prm12k.jsonl"), Columns())  # the sampler's default (generic) columns
    assert not qs.rejected and [r["id"] for r in qs.rows] == [f"train/algebra/{i}.json" for i in range(5)]
    assert qs.rows[3] == {"id": "train/algebra/3.json", "question": "What is 3 + 3?", "answer": "6"}
    first = json.loads((out / "prm12k.jsonl").read_text().splitlines()[0])
    assert set(first) == {"question", "answer", "id", "subject", "level"}  # no solution: UPFT samples its own


def test_omi2_parquet_is_deduplicated_by_problem(tmp_path):
    problems = ["Solve x+1=2.", "Solve x+2=4.", "Solve x+1=2.", "Solve x+3=9.", "Solve x+2=4.", "Solve x+1=2.", "  "]
    answers = ["1", "2", "1", "6", "3", "1", "0"]  # the second 'x+2=4' row disagrees with the first
    table = pa.table({"problem": problems, "generated_solution": [f"... \\boxed{{{a}}}" for a in answers],
                      "expected_answer": answers, "problem_source": ["augmented_math"] * 7})
    path = tmp_path / "train-00000-of-00001.parquet"
    pq.write_table(table, path, row_group_size=3)
    out = tmp_path / "out"
    m = prepare_public_set("omi2", str(path), out)
    check_counts(m, read=7, written=3, rejected_rows=1, duplicates=3)
    assert m["duplicates_with_other_answer"] == 1 and m["expected_approximate"] is True
    qs = load_questions(str(out / "omi2.jsonl"), Columns())
    kept = [("Solve x+1=2.", "1"), ("Solve x+2=4.", "2"), ("Solve x+3=9.", "6")]
    assert [(r["id"], r["answer"]) for r in qs.rows] == [(question_id(p), a) for p, a in kept]
    assert rejected(out, "omi2")[0]["line"] == 7 and rejected(out, "omi2")[0]["reason"] == "field 'problem' is empty"


def test_limo_jsonl(tmp_path):
    rows = [{"question": f"Hard problem {i}?", "solution": "long reasoning " * 20, "answer": str(i)} for i in range(4)]
    rows.append({"question": "No answer?", "solution": "...", "answer": None})
    m = prepare_public_set("limo", str(write_jsonl(tmp_path / "limo.jsonl", rows)), tmp_path / "out")
    check_counts(m, read=5, written=4, rejected_rows=1)
    assert rejected(tmp_path / "out", "limo")[0]["reason"] == "field 'answer' is null"
    assert len(load_questions(str(tmp_path / "out" / "limo.jsonl")).rows) == 4
    with pytest.raises(ValueError, match="would replace the release; choose another --out"):
        prepare_public_set("limo", str(tmp_path / "limo.jsonl"), tmp_path)


def test_uhard_is_assumed_and_says_so(tmp_path):
    rows = [{"problem": "P1?", "answer": "1", "id": "u1"}, {"problem": "P2?", "answer": "2"}]
    m = prepare_public_set("uhard", str(write_jsonl(tmp_path / "u.jsonl", rows)), tmp_path / "out")
    check_counts(m, read=2, written=2)
    assert any("ASSUMED" in a for a in m["assumptions"])
    ids = [r["id"] for r in load_questions(str(tmp_path / "out" / "uhard.jsonl")).rows]
    assert ids == ["u1", question_id("P2?")]


def test_gsm8k_from_an_hf_datasetdict_directory(tmp_path):
    datasets = pytest.importorskip("datasets")
    test = {"question": ["Tom has 2 apples and buys 3. How many?", "A robe takes 2 bolts. Total?", "Broken?"],
            "answer": ["2 + 3 = <<2+3=5>>5\n#### 5", "It takes 1,200 bolts.\n#### 1,200", "no final answer"]}
    train = {"question": ["Train q?"], "answer": ["#### 1"]}
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(train),
                          "test": datasets.Dataset.from_dict(test)}).save_to_disk(str(tmp_path / "gsm8k"))
    out = tmp_path / "out"
    m = prepare_public_set("gsm8k", str(tmp_path / "gsm8k"), out)
    check_counts(m, read=3, written=2, rejected_rows=1)
    assert m["layout_read"]["how"] == "HF DatasetDict (save_to_disk), split 'test'"
    assert rejected(out, "gsm8k")[0]["reason"] == "field 'answer' has no '#### N' final answer"
    name, _, qs = load_benchmark(f"gsm8k:{out / 'gsm8k.jsonl'}", seed=42)
    assert name == "gsm8k" and not qs.rejected
    assert [(r["id"], r["answer"]) for r in qs.rows] == [("0", "5"), ("1", "1200")]
    assert prepare_public_set("gsm8k", str(tmp_path / "gsm8k"), out, split="train")["rows_written"] == 1
    one = prepare_public_set("gsm8k", str(tmp_path / "gsm8k" / "test"), out)  # a Dataset's own directory
    assert one["layout_read"]["how"] == "HF Dataset (save_to_disk)" and one["rows_written"] == 2
    with pytest.raises(ValueError, match=r"no split 'dev' \(splits: \['test', 'train'\]\)"):
        prepare_public_set("gsm8k", str(tmp_path / "gsm8k"), out, split="dev")


def math500_rows():
    rows = [{"problem": "Convert $(0,3)$ to polar.", "solution": "So $\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}.$",
             "answer": "\\left( 3, \\frac{\\pi}{2} \\right)", "subject": "Precalculus", "level": 2,
             "unique_id": "test/precalculus/807.json"},
            {"problem": "Compute $1/2+1/2$.", "solution": "We get $\\boxed{1}$.", "answer": "1.0",
             "subject": "Algebra", "level": 1, "unique_id": "test/algebra/1.json"}]
    return rows


def test_math500_gold_from_answer_or_from_the_solution(tmp_path):
    path = write_jsonl(tmp_path / "test.jsonl", math500_rows())
    m = prepare_public_set("math500", str(tmp_path), tmp_path / "out")  # the directory: finds test.jsonl
    check_counts(m, read=2, written=2)
    assert m["gold"] == "answer"
    _, _, qs = load_benchmark(f"math500:{tmp_path / 'out' / 'math500.jsonl'}", seed=42)
    assert [r["answer"] for r in qs.rows] == ["\\left( 3, \\frac{\\pi}{2} \\right)", "1.0"]
    m = prepare_public_set("math500", str(path), tmp_path / "official", gold="solution")
    assert m["gold"] == "solution"
    _, _, qs = load_benchmark(f"math500:{tmp_path / 'official' / 'math500.jsonl'}", seed=42)
    assert [r["answer"] for r in qs.rows] == ["\\left( 3, \\frac{\\pi}{2} \\right)", "1"]
    assert [r["id"] for r in qs.rows] == ["test/precalculus/807.json", "test/algebra/1.json"]
    with pytest.raises(ValueError, match="math500 takes its gold from answer or solution"):
        prepare_public_set("math500", str(path), tmp_path / "x", gold="level")


def test_aime_parquet(tmp_path):
    table = pa.table({"id": pa.array([60, 61, 62], pa.int64()), "problem": ["P1", "P2", "P3"],
                      "solution": ["s1", "s2", "s3"], "answer": ["025", "204", ""],
                      "url": ["https://artofproblemsolving.com/x"] * 3, "year": ["2024"] * 3})
    (tmp_path / "data").mkdir()
    pq.write_table(table, tmp_path / "data" / "train-00000-of-00001.parquet")
    m = prepare_public_set("aime24", str(tmp_path), tmp_path / "out")
    check_counts(m, read=3, written=2, rejected_rows=1)
    _, _, qs = load_benchmark(f"aime2024:{tmp_path / 'out' / 'aime24.jsonl'}", seed=42)
    assert [(r["id"], r["answer"]) for r in qs.rows] == [("60", "25"), ("61", "204")]


def gpqa_csv(path, rows):
    """Write rows the way GPQA's release does: every cell quoted, multi-line cells, many more columns."""
    header = ["Record ID", "Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2",
              "Incorrect Answer 3", *GPQA_EXTRA]
    cell = lambda v: '"' + str(v).replace('"', '""') + '"'  # noqa: E731
    lines = [",".join(cell(h) for h in header)]
    lines += [",".join(cell(r.get(h, "")) for h in header) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_gpqa_diamond_csv_with_multiline_cells(tmp_path):
    rows = [{"Record ID": "recA", "Question": "Two quantum states with energies E1 and E2...\n\nWhich one?",
             "Correct Answer": " 10^-4 eV", "Incorrect Answer 1": "10^-11 eV", "Incorrect Answer 2": "10^-8 eV\n",
             "Incorrect Answer 3": "10^-9 eV", "Explanation": "He said, \"ok\",\nthen left.", "Subdomain": "Physics",
             "High-level domain": "Physics"},
            {"Record ID": "recB", "Question": "What is 007?", "Correct Answer": "007", "Incorrect Answer 1": "7",
             "Incorrect Answer 2": "70", "Incorrect Answer 3": "700", "High-level domain": "Chemistry"},
            {"Record ID": "recC", "Question": "Missing an option?", "Correct Answer": "x", "Incorrect Answer 1": "y",
             "Incorrect Answer 2": "z", "Incorrect Answer 3": ""}]
    path = gpqa_csv(tmp_path / "gpqa_diamond.csv", rows)
    out = tmp_path / "out"
    m = prepare_public_set("gpqa-diamond", str(path), out)
    check_counts(m, read=3, written=2, rejected_rows=1)
    assert m["layout_read"]["formats"] == ["csv"]
    assert rejected(out, "gpqa-diamond")[0]["reason"] == "field 'Incorrect Answer 3' is empty"
    _, _, free = load_benchmark(f"gpqa_free:{out / 'gpqa-diamond.jsonl'}", seed=42)
    assert [(r["id"], r["answer"]) for r in free.rows] == [("recA", "10^-4 eV"), ("recB", "007")]
    assert free.rows[0]["question"] == rows[0]["Question"]
    _, _, choice = load_benchmark(f"gpqa:{out / 'gpqa-diamond.jsonl'}", seed=42)
    assert len(choice.rows) == 2 and all(r["answer"] in "ABCD" for r in choice.rows)
    assert "(A)" in choice.rows[0]["question"]
    csv_file = list_source_files(str(path))[0]
    assert check_readable(csv_file, Columns("Question"))  # what preflight asks of a file; a sampler chunk reads:
    assert [(n, r["Record ID"]) for n, r, _ in scan_records(csv_file, Columns("Question", "", "Record ID"), 1, 2)] \
        == [(2, "recB")]
    _, _, direct = load_benchmark(f"gpqa_free:{path}", seed=42)  # the release CSV itself reads too (no options
    assert [r["answer"] for r in direct.rows] == ["10^-4 eV", "007", "x"]  # needed free-form)


def test_a_missing_column_names_file_column_and_columns_found(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", [{"problem": "Q?", "solution": "S", "unique_id": "a"}])
    with pytest.raises(ValueError, match=r"train\.jsonl: no column 'answer' .*columns found: \['problem', "
                                         r"'solution', 'unique_id'\]"):
        prepare_public_set("prm12k", str(path), tmp_path / "out")
    pq.write_table(pa.table({"question": ["q"], "answer": ["#### 1"]}), tmp_path / "aime.parquet")
    with pytest.raises(ValueError, match=r"aime\.parquet: no column 'problem'.*found: \['question', 'answer'\]"):
        prepare_public_set("aime24", str(tmp_path / "aime.parquet"), tmp_path / "out")
    assert not (tmp_path / "out" / "prm12k.jsonl").exists() and not (tmp_path / "out" / "aime24.jsonl").exists()
    pointer = tmp_path / "lfs" / "train.jsonl"
    write_jsonl(pointer, ["version https://git-lfs.github.com/spec/v1", "oid sha256:abc", "size 123"])
    with pytest.raises(ValueError, match=r"train\.jsonl is a Git LFS pointer, not the data"):
        prepare_public_set("prm12k", str(pointer), tmp_path / "out")


def test_benchmark_layouts_match_the_registry():
    registry = {"gsm8k": ["gsm8k"], "math500": ["math500"], "aime24": ["aime2024"],
                "gpqa-diamond": ["gpqa", "gpqa_free"]}
    for name, layout in PUBLIC_SETS.items():
        if layout.kind != BENCHMARK:
            assert (layout.question[1], layout.answer_out, layout.id_out) == ("question", "answer", "id")
            continue
        for bench in map(BENCHMARKS.get, registry[name]):
            assert (bench.question_field, bench.answer_field, bench.id_field) == \
                (layout.question[1], layout.answer_out, layout.id_out), name
            assert bench.extra_fields in ((), layout.required_extra), name
            assert f"{bench.name}:DIR/{name}.jsonl" in layout.consumer


def test_cli_prepares_lists_and_refuses(tmp_path):
    path = write_jsonl(tmp_path / "limo.jsonl", [{"question": "Q?", "solution": "S", "answer": "1"}])
    result = CliRunner().invoke(app, ["data", "prepare", "limo", "--source", str(path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert "limo.jsonl\t1 rows" in result.output
    manifest = json.loads((tmp_path / "o" / "limo.manifest.json").read_text())
    assert manifest["rows_written"] == 1 and manifest["expected_rows"] == 817
    listing = CliRunner().invoke(app, ["data", "list"])
    assert listing.exit_code == 0 and all(name in listing.output for name in PUBLIC_SETS)
    unknown = CliRunner().invoke(app, ["data", "prepare", "prm", "--source", str(path), "--out", str(tmp_path)])
    assert unknown.exit_code == 2 and "known: prm12k" in unknown.output
    missing = CliRunner().invoke(app, ["data", "prepare", "prm12k", "--source", str(path), "--out", str(tmp_path)])
    assert missing.exit_code == 1 and "no column 'problem'" in missing.output
