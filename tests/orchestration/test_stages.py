"""The whole pipeline with a tiny random model, as a user runs it (``upft run``, its own local Ray): every
file, every count, and an output that holds our lines only: no Ray or vLLM warning, no traceback."""

import json
import re
import subprocess
import sys

import pandas as pd
import pytest
from conftest import REPO, tiny_overrides

from upft_ray.config import load_config
from upft_ray.orchestration import stages as pipeline

OUR_LINE = re.compile(r"^\[(upft|sample|train|eval\.\w+|sweep|analyze|engine|lease)\] (?!warning:|error:)")


@pytest.mark.slow  # two `upft run`s, each with its own Ray and three engine starts: ~3 min
def test_pipeline_end_to_end_on_tiny_model_prints_only_its_own_lines(tmp_path, tiny_model_dir):
    run = tmp_path / "run"
    out = subprocess.run([sys.executable, "-m", "upft_ray.cli", "run", *tiny_overrides(run, tiny_model_dir),
                          "ray.num_cpus=4"], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    foreign = [line for line in out.stderr.splitlines() if not OUR_LINE.match(line) and not line.startswith(" ")]
    assert not foreign, "lines a normal run must not print:\n" + "\n".join(foreign[:20])
    assert "Traceback" not in out.stdout + out.stderr
    report = run / "report.md"
    assert out.stdout.startswith(report.read_text())

    for rel in ("report.md", "sample/manifest.json", "sample/rejected.parquet", "train/final/config.json",
                "train/final/model.safetensors", "train/examples/_done.json", "train/manifest.json",
                "train/metrics.jsonl", "eval/metrics.json", "eval/arith-eval.parquet", "eval_base/metrics.json"):
        assert (run / rel).is_file(), rel

    sample = json.loads((run / "sample/manifest.json").read_text())
    c = sample["counts"]
    assert c["rows_in"] == 24 == c["rows_written"] + c["rows_rejected"]
    assert c["prefix_rows"] + c["full_rows"] == c["rows_written"]

    train = json.loads((run / "train/manifest.json").read_text())
    tc = train["counts"]
    assert tc["rows_in"] == c["rows_written"] == tc["examples"] + tc["rows_dropped_no_response_token"]
    assert tc["steps"] == tc["rows_first_epoch"] // tc["rows_per_step"] > 0 and 0 < tc["packing_efficiency"] <= 1
    examples = pd.read_parquet(run / "train/examples")  # a directory of parts, read as one table
    assert len(examples) == tc["examples"] and tc["tokens_tuned"] == int(examples.num_response_tokens.sum())
    steps = [json.loads(line)["step"] for line in (run / "train/metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, tc["steps"] + 1))

    for sub in ("eval", "eval_base"):
        metrics = json.loads((run / sub / "metrics.json").read_text())["benchmarks"]["arith-eval"]
        assert metrics["rows_read"] == 12 == metrics["graded"] + metrics["rows_rejected"]
    graded = pd.read_parquet(run / "eval/arith-eval.parquet")
    assert len(graded) == 12 and graded.question_id.is_unique
    assert "| UPFT |" in report.read_text() and "| base |" in report.read_text()

    # The same command again: every stage reuses what it committed (training is not redone, nor exported
    # again, so the evaluations of its model resume instead of being refused as another model's).
    final = {p.name: p.stat().st_mtime_ns for p in (run / "train/final").iterdir()}
    again = subprocess.run([sys.executable, "-m", "upft_ray.cli", "run", *tiny_overrides(run, tiny_model_dir),
                            "ray.num_cpus=4"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-4000:]
    assert "[train] already done" in again.stderr
    assert {p.name: p.stat().st_mtime_ns for p in (run / "train/final").iterdir()} == final
    for sub in ("eval", "eval_base"):
        chunks = json.loads((run / sub / "metrics.json").read_text())["chunks"]
        assert chunks["written"] == 0 and chunks["reused"] == chunks["total"] > 0, chunks


def test_trained_model_loads_in_transformers(tmp_path, tiny_model_dir, ray_local):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = load_config(None, tiny_overrides(tmp_path / "run", tiny_model_dir) + ["train.zero_stage=3"])
    pipeline.sample(cfg)
    pipeline.train(cfg)
    final = tmp_path / "run/train/final"
    model = AutoModelForCausalLM.from_pretrained(final)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(final)
    ids = tokenizer("What is 2 + 3?", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.isfinite(model(ids).logits).all()
    changed = [name for name, p in model.named_parameters()
               if not torch.equal(p, dict(base.named_parameters())[name])]
    assert changed, "training left every weight unchanged"
