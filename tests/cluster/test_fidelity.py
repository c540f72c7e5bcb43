"""The README's paper-fidelity table is written from the loaded job configs, and cannot hide a difference."""

import dataclasses
import subprocess
import sys

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "cluster"))
import fidelity  # noqa: E402


def test_readme_table_is_what_the_job_configs_give():
    out = subprocess.run([sys.executable, str(REPO / "cluster" / "fidelity.py"), "--check"], capture_output=True, timeout=120,
                         text=True)
    assert out.returncode == 0, out.stderr
    readme = (REPO / "README.md").read_text()
    assert fidelity.fidelity_table() in readme


def _row(table: str, label: str) -> list[str]:
    line = next(line for line in table.splitlines() if line.startswith(f"| {label} |"))
    return [cell.strip() for cell in line.strip("|").split("|")][1:]


def test_table_states_the_paper_recipe_of_each_run():
    table = fidelity.fidelity_table()
    n = len(fidelity.RUNS)
    assert _row(table, "global batch (workers x micro x accumulation)")[:n] == ["`64` ✓"] * n
    assert _row(table, "loss normalisation")[:n] == ["`example` ✓"] * n
    assert _row(table, "prefix length t (`sample.prefix_tokens`)")[:n] == \
        ["`8` ✓"] + ["`32` ✓"] * 4 + ["`128` ✓"] * 3
    assert _row(table, "structure ratio p (`sample.structure_ratio`)")[3] == "`0.3` ✓"  # qwen-math-limo
    assert _row(table, "chat template (`engine.chat_template`)")[:n:3] == ["`llama-3.1-upft` ✓", "`qwen-math-upft` ✓",
                                                                          "`deepseek-r1-upft` ✓"]
    assert _row(table, "eval benchmarks")[0] == "`gsm8k, math500, aime2024, gpqa_free` ✓"
    micro = _row(table, "micro-batch")
    assert micro[0] == "`4` ≠ `1`" and micro[5] == "`1` ✓" and "throughput" in micro[-1]


def test_where_the_papers_text_and_the_script_disagree_both_are_named():
    lr = _row(fidelity.fidelity_table(), "learning rate")
    assert lr[0] == "`1e-06` ≠ `2e-06`" and lr[2] == "`2e-06` ✓"  # llama-prm12k (paper's text), qwen-math-omi2
    assert "1e-6 (PRM, U-Hard)" in lr[-2] and "We follow the paper's text" in lr[-1]


def test_a_difference_without_a_reason_is_refused(monkeypatch):
    quiet = dataclasses.replace(next(s for s in fidelity.SETTINGS if s.label == "micro-batch"), why="")
    monkeypatch.setattr(fidelity, "SETTINGS", [quiet])
    with pytest.raises(ValueError, match="micro-batch: differs"):
        fidelity.fidelity_table()


def test_a_changed_config_changes_the_table(monkeypatch):
    real = fidelity.job_config

    def with_token_loss(run):
        cfg = real(run)
        return cfg.model_copy(update={"train": cfg.train.model_copy(update={"loss_normalization": "token"})})

    monkeypatch.setattr(fidelity, "job_config", with_token_loss)
    loss = next(s for s in fidelity.SETTINGS if s.label == "loss normalisation")
    monkeypatch.setattr(fidelity, "SETTINGS", [dataclasses.replace(loss, why="a reason")])
    assert _row(fidelity.fidelity_table(), "loss normalisation")[0] == "`token` ≠ `example`"


def test_baselines_and_base_rows_change_only_their_method():
    kinds = {}
    for name, (run, kind) in fidelity.variants().items():
        assert fidelity.variant_differences(name, run) <= fidelity.VARIANT_MAY_CHANGE[kind], name
        kinds[name] = kind
    assert kinds["qwen-math-prm12k-rft16"] == "rft16" and kinds["r1distill-base"] == "base"
    assert "sample.method" in fidelity.variant_differences("qwen-math-limo-sft", "qwen-math-limo")


def test_a_baseline_that_changes_more_is_refused(monkeypatch):
    real = fidelity.job_config

    def sft_with_other_lr(name):
        cfg = real(name)
        if name == "llama-prm12k-sft":
            return cfg.model_copy(update={"train": cfg.train.model_copy(update={"learning_rate": 3e-6})})
        return cfg

    monkeypatch.setattr(fidelity, "job_config", sft_with_other_lr)
    with pytest.raises(ValueError, match="llama-prm12k-sft.yaml: changes .*train.learning_rate"):
        fidelity.fidelity_table()
