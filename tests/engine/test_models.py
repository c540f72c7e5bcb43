"""Model names resolve to checkpoints; the bundled model is a real HF checkpoint, prepared once."""

import pytest

from upft_ray.config.model_refs import model_problem
from upft_ray.engine.models import prepare_bundled_model, resolve_model


def test_model_names(tmp_path):
    assert model_problem("smollm2-135m-instruct") is None
    assert model_problem("Qwen/Qwen2.5-Math-7B-Instruct") is None
    assert "does not exist" in model_problem(str(tmp_path / "nope"))
    assert "not an HF checkpoint" in model_problem(str(tmp_path))
    assert "not a bundled model" in model_problem("no-such-model")
    with pytest.raises(ValueError, match="model:"):
        resolve_model("no-such-model")


def test_bundled_model_is_prepared_once_and_loads(smollm2_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    weights = smollm2_dir / "model.safetensors"
    mtime = weights.stat().st_mtime
    assert prepare_bundled_model("smollm2-135m-instruct") == smollm2_dir
    assert weights.stat().st_mtime == mtime  # idempotent: not rebuilt
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir)
    assert tokenizer.chat_template and model.config.num_hidden_layers == 30
    ids = tokenizer("2 + 2 =", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
    assert torch.isfinite(logits).all()
