"""Every row of the paper's two tables has a job config that says what the row ran (or a reason it has none),
and the rows we hold are the paper's as ../shared/UPFT.md lists them."""

import re
import subprocess
import sys

import pytest
from conftest import REPO

from upft_ray.config import load_config
from upft_ray.reporting.paper_tables import DATA_LABELS, MODEL_LABELS, MODELS, ROWS, paper_configs

UPFT_NOTES = REPO.parent / "shared" / "UPFT.md"
PAPER_T = {"llama": 8, "qwen": 32, "r1": 128}
_SHORT = {"Llama-3.1-8B": "llama", "Qwen2.5-Math-7B": "qwen", "R1-Distill-7B": "r1"}
_METHODS = {"SFT": "sft", "UPFT": "upft", "RFT": "rft", "RFT (K=16)": "rft", "V-STaR": "v_star",
            "label filter": "label_filter"}


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def parse_notes(text: str) -> set[tuple]:
    """Return the rows of both tables in ../shared/UPFT.md as comparable tuples."""
    rows, section, model = set(), None, None
    data_keys = {v: k for k, v in DATA_LABELS.items()}
    for line in text.splitlines():
        if line.startswith("## "):
            section = "unsupervised" if "unsupervised" in line else "supervised" if "supervised" in line else None
        if section is None or not line.startswith("| ") or line.startswith(("| method", "|---")):
            continue
        cells = _cells(line)
        if section == "unsupervised":
            label, data, length, *scores = cells
            if not label.startswith("+ "):
                model = next(k for k, v in MODEL_LABELS.items() if v == label)
                rows.add((section, model, "base", "", None, tuple(map(float, scores))))
            else:
                rows.add((section, model, _METHODS[label[2:]], data_keys[data], float(length),
                          tuple(map(float, scores))))
        else:
            label, sampled, tuned, *scores = cells
            name, method = label.split(" + ", 1)
            rows.add((section, _SHORT[name], _METHODS[method], "prm12k", (sampled, tuned), tuple(map(float, scores))))
    return rows


def ours() -> set[tuple]:
    return {(r.table, r.model, r.method, r.data if r.table == "unsupervised" else "prm12k",
             r.tuned_length if r.table == "unsupervised" else r.tokens, r.scores) for r in ROWS}


@pytest.mark.skipif(not UPFT_NOTES.is_file(), reason=f"{UPFT_NOTES} (the project's paper notes) is not here")
def test_the_rows_are_the_papers():
    assert parse_notes(UPFT_NOTES.read_text()) == ours()


def test_every_row_has_a_config_or_says_why_not():
    assert len([r for r in ROWS if r.table == "unsupervised"]) == 17 and len(ROWS) == 25
    for row in ROWS:
        if not row.config:
            assert row.note.startswith("not provided:"), row
            continue
        path = REPO / "jobs" / "configs" / f"{row.config}.yaml"
        cfg, launch = load_config(path), path.read_text().splitlines()[1]
        assert cfg.model == MODELS[row.model], row
        assert cfg.sample.prefix_tokens == PAPER_T[row.model], row
        if row.method == "base":
            assert f"upft evaluate -c jobs/configs/{row.config}.yaml --model base" in launch
            continue
        assert f"upft run -c jobs/configs/{row.config}.yaml" in launch
        assert cfg.sample.method == row.method and row.data in cfg.sample.questions, row
        assert cfg.sample.structure_ratio == (0.3 if row.data == "limo" else 0.1), row
        assert cfg.sample.num_samples == (16 if row.method in ("rft", "label_filter") else 1), row


def test_every_job_config_is_a_paper_row():
    shipped = {p.stem for p in (REPO / "jobs" / "configs").glob("*.yaml")}
    assert shipped == set(paper_configs())


def test_a_missing_row_is_caught(monkeypatch):
    text = UPFT_NOTES.read_text() if UPFT_NOTES.is_file() else ""
    if text:
        dropped = re.sub(r"\n\| \+ UPFT \| LIMO 0\.8K \| 77\.8 \|[^\n]*", "", text)
        assert parse_notes(dropped) != ours()


def test_the_paper_document_is_what_its_script_writes():
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "paper_doc.py"), "--check"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    text = (REPO / "docs" / "PAPER.md").read_text()
    for row in ROWS:
        assert (f"[`{row.config}`](../jobs/configs/{row.config}.yaml)" if row.config else "not provided") in text
    assert "ASSUMPTION" in text and "gpu_check_zero3.json" in text  # the inputs of every estimate are named
