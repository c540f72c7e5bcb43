"""bench/RESULTS.md's ablation blocks and README.md's answer table are renderings of the recorded sweep reports
(bench/results/ablation_*.md)."""

import json
from pathlib import Path

from doc_blocks import find_block

REPO = Path(__file__).resolve().parent.parent


def test_results_block_is_the_rendering_of_the_recorded_report(bench_script):
    script = bench_script("ablation_record")
    block = find_block((REPO / "bench" / "RESULTS.md").read_text(), script.BEGIN, script.END, "bench/RESULTS.md")
    assert block == script.render_block(script.RECORD.read_text()), (
        "bench/RESULTS.md's ablation block differs from bench/results/ablation_collapse.md: run `python bench/ablation_record.py`")


def test_each_ablation_recorded_has_its_block_and_none_without_a_record(bench_script):
    script = bench_script("ablation_record")
    results = (REPO / "bench" / "RESULTS.md").read_text()
    for ablation in script.ABLATIONS.values():
        begin, end = ablation.markers
        if not ablation.record.is_file():  # not recorded yet: no block may show figures
            assert begin not in results, f"{begin} without {ablation.record}"
            continue
        block = find_block(results, begin, end, "bench/RESULTS.md")
        assert block == script.render_block(ablation.record.read_text(), ablation), f"run `{ablation.command}`"


REPORT = """# Sweep: demo

Recorded 2026-11-26 20:00 UTC on cpu x2 by `python bench/ablation_record.py` from `upft sweep` (5 of 6 runs finished; wall time per run, median [min, max]: train 600 s [500, 700] (2 runs)).

Model `m`; seeds [1, 2].

## Accuracy

| variant | method | runs | arith | avg |
|---|---|---|---|---|
| base | - | 1 | 23.2 (139/600) [20.0, 26.7] | 23.2 |
| paper | UPFT | 2/2 | 15.0 +- 1.0 [6.0, 24.0] (2 runs) | 15.0 |

## Differences vs base

| variant | vs | benchmark | difference (pts) | p | verdict | runs better / worse / within noise |
|---|---|---|---|---|---|---|
| paper | base | arith | -8.2 | 0.010 | worse | 0 / 2 / 0 |
| sft | base | arith | +1.0 | 0.600 | within noise | 0 / 0 / 2 |
| lr | base | arith | +0.5 | - | within noise (no spread) | 0 / 0 / 2 |
| t32 | base | arith | - | - | - | no paired run |

## Differences vs SFT (sft)

| variant | vs | benchmark | difference (pts) | p | verdict | runs better / worse / within noise |
|---|---|---|---|---|---|---|
| paper | SFT (sft) | arith | -9.2 | 0.010 | worse | 0 / 2 / 0 |

## Every run

| run | arith |
|---|---|
"""


def test_render_block_keeps_the_tables_and_names_the_verdicts(bench_script):
    script = bench_script("ablation_record")
    block = script.render_block(REPORT)
    assert block.startswith(script.BEGIN) and block.endswith(script.END)
    assert "(5 of 6 runs finished; wall time per run, median [min, max]: train 600 s [500, 700] (2 runs))" in block
    assert "| paper | UPFT | 2/2 | 15.0 +- 1.0 [6.0, 24.0] (2 runs) | 15.0 |" in block
    assert "| run | arith |" not in block  # the every-run tables stay in the recorded report
    assert ("- vs base on arith: **better**: none; **within noise**: sft, lr; **worse**: paper" in block)
    assert "- vs SFT on arith: **better**: none; **within noise**: none; **worse**: paper" in block


def _manifest(path: Path, wall: float, reused: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"wall_time_s": wall, **({"shards": {"reused": reused}} if "sample" in str(path) else {})}))


def test_stage_times_are_medians_of_the_finished_runs_leaving_out_resumed_stages(bench_script, tmp_path):
    script = bench_script("ablation_record")
    runs = [tmp_path / name for name in ("a", "b", "c")]
    for run, (sample, train, ev) in zip(runs, [(100, 600, 130), (200, 500, 370), (300, 700, 100)]):
        _manifest(run / "sample" / "manifest.json", sample)
        _manifest(run / "train" / "manifest.json", train)
        _manifest(run / "eval" / "metrics.json", ev)
    _manifest(runs[2] / "sample" / "manifest.json", 0.0, reused=1)  # resumed: its time is only the last attempt's
    _manifest(tmp_path / "base" / "eval_base" / "metrics.json", 396)
    assert script.stage_times(runs, tmp_path / "base") == (
        "wall time per run, median [min, max]: sample 150 s [100, 200] (2 runs), train 600 s [500, 700] (3 runs), "
        "evaluation 130 s [100, 370] (3 runs); base evaluation 396 s")
    assert script.stage_times([], tmp_path / "nowhere") == "no finished run"


def test_readme_answer_block_is_the_rendering_of_the_recorded_ablations(bench_script):
    script = bench_script("ablation_record")
    block = find_block((REPO / "README.md").read_text(), script.ANSWER_BEGIN, script.ANSWER_END, "README.md")
    assert block == script.answer_block(), (
        "README.md's 'What UPFT does at 135M and at 0.5B' table differs from the records: "
        "run `python bench/ablation_record.py`")
    for name, (size, _) in script.ANSWER.items():  # every recorded ablation answers, none without a record
        assert (f"**{size}**:" in block) == script.ABLATIONS[name].record.is_file(), name


def test_answer_section_lists_the_base_and_the_shared_variants_with_both_comparisons(bench_script):
    script = bench_script("ablation_record")
    lines = script.answer_section("collapse", REPORT)
    assert lines[0].startswith("**135M**: `m`, 5 of 6 runs finished (recorded 2026-11-26 20:00 UTC on cpu x2;")
    assert "| base | arith | 1 | 23.2 (139/600) [20.0, 26.7] | - | - |" in lines
    assert ("| paper | arith | 2/2 | 15.0 +- 1.0 [6.0, 24.0] | -8.2, p 0.010: **worse** (runs 0 / 2 / 0) "
            "| -9.2, p 0.010: **worse** (runs 0 / 2 / 0) |") in lines
    # not run (t32, sft) or not one of the shared variants (lr)
    assert not any(line.startswith(("| lr ", "| t32 ", "| sft ")) for line in lines)


COLLAPSE = """
## Collapse analysis (`upft analyze collapse -c c.yaml`)

Lengths in tokens.

| model | t | answers | mean | p10 / p50 / p90 | end <= t+2 | cut by limit | P(EOS) with template | P(EOS) without | questions (shorter than t) |
|---|---|---|---|---|---|---|---|---|---|
| base/eval_base | 8 | 600 | 85.6 | 27 / 71 / 171 | 0.0% | 8.2% | 1.7e-04 | 1.1e-05 | 100 (0) |
| base/eval_base @ t=32 | 32 | 600 | 85.6 | 27 / 71 / 171 | 24.7% | 8.2% | 0.36% | 1.53% | 74 (26) |
| lr-s1/eval | 8 | 600 | 42.7 | 14 / 28 / 74 | 5.7% | 6.2% | 0.75% | 0.95% | 96 (4) |
| paper-s2/eval | 8 | 600 | 13.7 | 8 / 12 / 24 | 45.0% | 0.0% | 37.47% | 18.71% | 79 (21) |
| paper-s1/eval | 8 | 600 | 10.5 | 7 / 9 / 15 | 64.5% | 0.0% | 28.77% | 14.38% | 64 (36) |
"""


def test_answer_section_adds_the_collapse_analysis_per_run_in_seed_order_when_recorded(bench_script):
    script = bench_script("ablation_record")
    assert not any("collapse analysis" in line for line in script.answer_section("collapse", REPORT))
    lines = script.answer_section("collapse", REPORT + COLLAPSE)
    table = lines[lines.index("| variant | t | runs | median answer (tokens) | answers ending within t + 2 | "
                              "P(EOS) after t, no template |"):]
    assert table[2:] == ["| base | 8 | 1 | 71 | 0.0% | 1.1e-05 |",
                         "| base | 32 | 1 | 71 | 24.7% | 1.53% |",
                         "| paper | 8 | 2 | 9 / 12 | 64.5% / 45.0% | 14.38% / 18.71% |"]  # lr: not a shared variant


def test_a_machine_without_the_runs_never_overwrites_a_fuller_record(bench_script, tmp_path, monkeypatch):
    script = bench_script("ablation_record")
    config = tmp_path / "ablation.yaml"
    config.write_text(f"run_dir: {tmp_path / 'runs'}\nsweep:\n  seeds: [1]\n  variants:\n    - name: upft\n")
    record = tmp_path / "ablation_tmp.md"
    record.write_text(REPORT)  # 5 of 6 runs finished on the machine that ran them
    ablation = type("Here", (), {"config": config, "record": record, "command": "python bench/ablation_record.py",
                                 "markers": ("<!-- a -->", "<!-- b -->")})()
    monkeypatch.setitem(script.ABLATIONS, "tmp", ablation)
    monkeypatch.setattr("sys.argv", ["ablation_record.py", "--ablation", "tmp"])
    assert script.main() == 1 and record.read_text() == REPORT  # refused: nothing written
    assert script.recorded_runs(record) == 5 and script.recorded_runs(tmp_path / "none.md") == 0


def _tmp_ablation(script, tmp_path, monkeypatch, record_text: str):
    """Return (the ablation's run directory, its record) for a one-run sweep config under ``tmp_path``,
    registered as ablation ``tmp`` and chosen on the command line."""
    config = tmp_path / "ablation.yaml"
    config.write_text(f"run_dir: {tmp_path / 'runs'}\nsweep:\n  seeds: [1]\n  variants:\n    - name: upft\n")
    record = tmp_path / "ablation_tmp.md"
    record.write_text(record_text)
    ablation = type("Here", (), {"config": config, "record": record, "command": "python bench/ablation_record.py",
                                 "markers": ("<!-- a -->", "<!-- b -->")})()
    monkeypatch.setitem(script.ABLATIONS, "tmp", ablation)
    monkeypatch.setattr("sys.argv", ["ablation_record.py", "--ablation", "tmp"])
    return tmp_path / "runs", record


def test_a_recorded_collapse_analysis_missing_here_is_never_dropped(bench_script, tmp_path, monkeypatch, capsys):
    script = bench_script("ablation_record")
    text = "# Sweep\n\n(0 of 1 runs finished)\n\n## Collapse analysis (`upft analyze collapse`)\n\n| model |\n"
    _, record = _tmp_ablation(script, tmp_path, monkeypatch, text)
    assert script.main() == 1 and record.read_text() == text  # a fresh clone: the analysis was not run here
    assert "upft analyze collapse" in capsys.readouterr().err


def test_a_collapse_analysis_older_than_a_finished_run_is_refused(bench_script, tmp_path, monkeypatch):
    from upft_ray.config import load_config

    script = bench_script("ablation_record")
    run_dir, _ = _tmp_ablation(script, tmp_path, monkeypatch, "# Sweep\n")
    analysis = run_dir / "analysis" / "collapse" / "collapse.json"
    analysis.parent.mkdir(parents=True)
    analysis.write_text(json.dumps({"models": [{"model": "base/eval_base"}, {"model": "upft-s1/eval"}]}))
    ablation = script.ABLATIONS["tmp"]
    cfg = load_config(ablation.config)
    why = script.refusal(ablation, cfg, ["upft-s1", "upft-s2"])
    assert "leaves out upft-s2:" in why and f"upft analyze collapse -c {ablation.config}" in why
    assert script.refusal(ablation, cfg, ["upft-s1"]) is None
