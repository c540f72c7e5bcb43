"""bench/RESULTS.md's sweep blocks are renderings of the recorded sweep reports (bench/results/sweep_*.md), written by
bench/sweep_record.py only from a finished sweep."""

import json
from pathlib import Path

import pytest
from doc_blocks import find_block

REPO = Path(__file__).resolve().parent.parent
RECORDS = sorted((REPO / "bench" / "results").glob("sweep_*.md"))


@pytest.mark.parametrize("record", RECORDS, ids=[p.name for p in RECORDS])
def test_results_block_is_the_rendering_of_the_recorded_report(bench_script, record):
    script = bench_script("sweep_record")
    config = REPO / "configs" / f"{record.stem.removeprefix('sweep_')}.yaml"
    assert config.is_file() and script.record_path(config) == record
    begin, end = script.sweep_markers(config)
    block = find_block((REPO / "bench" / "RESULTS.md").read_text(), begin, end, "bench/RESULTS.md")
    assert block == script.render_block(record.read_text(), config), f"run `{script.command(config)}`"


def test_every_sweep_block_has_its_record(bench_script):
    script = bench_script("sweep_record")
    results = (REPO / "bench" / "RESULTS.md").read_text()
    for config in (REPO / "configs").glob("*.yaml"):
        if script.sweep_markers(config)[0] in results:
            assert script.record_path(config).is_file(), f"{config.name}'s block shows figures without a record"


REPORT = """# Sweep: demo

Recorded 2026-12-07 21:00 UTC on cpu x2 by `python bench/sweep_record.py configs/demo.yaml` (3 of 3 runs finished).

Model `m`; seeds [42].

## Accuracy

| variant | method | runs | arith | avg |
|---|---|---|---|---|
| upft | UPFT | 1/1 | 15.0 (3/20) | 15.0 |

## Differences vs SFT (sft)

| variant | vs | benchmark | difference (pts) | p | verdict | runs better / worse / within noise |
|---|---|---|---|---|---|---|
| upft | SFT (sft) | arith | -4.6 | 0.010 | worse | 0 / 3 / 0 |

## Every run

| run | arith |
|---|---|
| upft-s42 | 15.0 |

## Token efficiency (means over seeds)

| method | runs | questions x samples | tokens sampled | tokens tuned |
|---|---|---|---|---|
| UPFT | 1 | 50 x 1 | 967 | 1,011 |

## Collapse analysis (`upft analyze collapse -c configs/demo.yaml`)

| model | t | answers | mean |
|---|---|---|---|
| upft-s42/eval | 8 | 20 | 47.0 |

## RFT samples kept

- `rft16-s42` trained on 70 of its 800 sampled solutions (8.8%), 730 dropped as graded incorrect
"""


def test_render_block_keeps_efficiency_accuracy_differences_collapse_and_what_rft_kept(bench_script):
    script = bench_script("sweep_record")
    config = REPO / "configs" / "demo.yaml"
    block = script.render_block(REPORT, config)
    begin, end = script.sweep_markers(config)
    assert block.startswith(begin) and block.endswith(end) and "configs/demo.yaml" in begin
    assert "(3 of 3 runs finished)" in block and "| UPFT | 1 | 50 x 1 | 967 | 1,011 |" in block
    assert "| upft | UPFT | 1/1 | 15.0 (3/20) | 15.0 |" in block and "- `rft16-s42` trained on 70 of its 800" in block
    assert "| upft | SFT (sft) | arith | -4.6 | 0.010 | worse | 0 / 3 / 0 |" in block
    assert "| upft-s42/eval | 8 | 20 | 47.0 |" in block and "Differences vs the base" not in block  # none recorded
    assert "| upft-s42 | 15.0 |" not in block  # the every-run table stays in the record


def test_rft_kept_reads_the_rft_runs_train_manifests(bench_script, tmp_path):
    script = bench_script("sweep_record")
    for name, counts in (("upft-s1", {"method": "upft", "examples": 50, "rows_in": 50}), ("rft-s1", {
            "method": "rft", "rows_in": 800, "examples": 66, "rows_dropped_incorrect": 734})):
        (tmp_path / name / "train").mkdir(parents=True)
        (tmp_path / name / "train" / "manifest.json").write_text(json.dumps({"counts": counts}))
    lines = script.rft_kept([tmp_path / "upft-s1", tmp_path / "rft-s1", tmp_path / "not-trained"])
    assert lines == ["- `rft-s1` trained on 66 of its 800 sampled solutions (8.2%), 734 dropped as graded incorrect"]


def test_an_unfinished_sweep_is_refused_and_nothing_written(bench_script, tmp_path, monkeypatch, capsys):
    script = bench_script("sweep_record")
    config = tmp_path / "demo-sweep.yaml"
    config.write_text(f"run_dir: {tmp_path / 'runs'}\nsweep:\n  seeds: [1]\n  variants:\n    - name: upft\n")
    monkeypatch.setattr("sys.argv", ["sweep_record.py", str(config)])
    assert script.main() == 1
    assert "0 of 1 runs finished" in capsys.readouterr().err and not script.record_path(config).exists()
