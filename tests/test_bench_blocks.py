"""Every generated block of README.md and bench/RESULTS.md is the rendering of its recorded results file: a
figure is produced by the script named in the block's marker, never typed, and a re-recorded file without
its re-rendered block (or the other way round) fails here."""

import json
from pathlib import Path

import pytest
from doc_blocks import find_block

REPO = Path(__file__).resolve().parent.parent


def _stall(script):
    from upft_ray.config import load_config
    timeout = load_config(script.CONFIG).sample.engine.stall_timeout_s
    block = script.stall_block(json.loads(script.RESULTS.read_text()), timeout)
    return "bench/RESULTS.md", block


def _suite_times(script):
    if not script.RESULTS.is_file():  # not measured yet (the suites' own first timing run): no figures shown
        return "README.md", f"{script.BEGIN}\n{script.END}"
    return "README.md", script.render(json.loads(script.RESULTS.read_text()))


def _report(script):
    return "bench/RESULTS.md", script.results_block(json.loads(script.RESULTS.read_text()))


def _rendered(script):
    return "bench/RESULTS.md", script.render(json.loads(script.RESULTS.read_text()))


def _precision(script):
    report = json.loads((REPO / "bench" / "results" / "precision_qwen05b.json").read_text())
    return "bench/RESULTS.md", script.render(report)


BLOCKS = {"faults_record": _report, "quickstart_record": _stall, "suite_times": _suite_times,
          "sampler_scale": _report, "peer_sampling": _report, "train_throughput": _report, "trainer_lib": _report,
          "checkpointing_lib": _report,
          "resume_memory": _rendered, "shape_memory": _rendered, "export_memory": _rendered, "cpu_bf16": _rendered,
          "precision_probe": _precision}


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_block_is_the_rendering_of_the_recorded_results(bench_script, name):
    script = bench_script(name)
    doc, expected = BLOCKS[name](script)
    begin, end = expected.splitlines()[0], expected.splitlines()[-1]
    block = find_block((REPO / doc).read_text(), begin, end, doc)
    assert block == expected, f"{doc}'s block differs from {script.RESULTS.relative_to(REPO)}: run `python bench/{name}.py`"
