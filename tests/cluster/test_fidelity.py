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
    assert _row(table, "global batch (workers x micro x accumulation)")[:4] == ["`64` ✓"] * 4
    assert _row(table, "loss normalisation")[:4] == ["`example` ✓"] * 4
    assert _row(table, "prefix length t (`sample.prefix_tokens`)")[:4] == ["`8` ✓", "`32` ✓", "`32` ✓", "`128` ✓"]
    assert _row(table, "eval new tokens / context")[:4] == ["`8192 / 8192` ≠ `16384 / 8192`", "`4096 / 4096` ≠ `16384 / 4096`",
                                                            "`4096 / 4096` ≠ `16384 / 4096`", "`8192 / 8192` ≠ `16384 / 8192`"]
    assert _row(table, "eval benchmarks")[0] == "`gsm8k, math500, aime2024, gpqa_free` ✓"
    micro = _row(table, "micro-batch")
    assert micro[0] == "`4` ≠ `1`" and micro[3] == "`1` ✓" and "throughput" in micro[4]


def test_a_difference_without_a_reason_is_refused(monkeypatch):
    quiet = dataclasses.replace(next(s for s in fidelity.SETTINGS if s.label == "micro-batch"), why="")
    monkeypatch.setattr(fidelity, "SETTINGS", [quiet])
    with pytest.raises(ValueError, match="micro-batch: differs"):
        fidelity.fidelity_table()


def test_a_changed_config_changes_the_table(monkeypatch):
    real = fidelity.job_config

    def with_token_loss(run, sft=False):
        cfg = real(run, sft)
        return cfg.model_copy(update={"train": cfg.train.model_copy(update={"loss_normalization": "token"})})

    monkeypatch.setattr(fidelity, "job_config", with_token_loss)
    loss = next(s for s in fidelity.SETTINGS if s.label == "loss normalisation")
    monkeypatch.setattr(fidelity, "SETTINGS", [dataclasses.replace(loss, why="a reason")])
    assert _row(fidelity.fidelity_table(), "loss normalisation")[0] == "`token` ≠ `example`"


def test_sft_baselines_change_only_the_method():
    for run in fidelity.RUNS:
        assert fidelity.sft_differences(run) <= fidelity.SFT_MAY_CHANGE
        assert "sample.method" in fidelity.sft_differences(run)
