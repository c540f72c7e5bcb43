"""bench/RESULTS.md's ablation block is the rendering of bench/ablation_collapse.md (the recorded sweep report)."""

from pathlib import Path

from upft_ray.doc_blocks import find_block

REPO = Path(__file__).resolve().parent.parent


def test_results_block_is_the_rendering_of_the_recorded_report(bench_script):
    script = bench_script("ablation_record")
    block = find_block((REPO / "bench" / "RESULTS.md").read_text(), script.BEGIN, script.END, "bench/RESULTS.md")
    assert block == script.render_block(script.RECORD.read_text()), (
        "bench/RESULTS.md's ablation block differs from bench/ablation_collapse.md: run `python bench/ablation_record.py`")


REPORT = """# Sweep: demo

Recorded 2026-11-26 20:00 UTC on cpu x2 by `python bench/ablation_record.py` from `upft sweep` (5 of 6 runs finished).

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
    assert "(5 of 6 runs finished)" in block
    assert "| paper | UPFT | 2/2 | 15.0 +- 1.0 [6.0, 24.0] (2 runs) | 15.0 |" in block
    assert "| run | arith |" not in block  # the every-run tables stay in the recorded report
    assert ("- vs base on arith: **better**: none; **within noise**: sft, lr; **worse**: paper" in block)
    assert "- vs SFT on arith: **better**: none; **within noise**: none; **worse**: paper" in block
