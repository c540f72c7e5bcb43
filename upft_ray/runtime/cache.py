"""Where upft-ray keeps what outlives a run on this machine: prepared models and compiled DeepSpeed ops."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Return the directory where prepared models live (``$UPFT_CACHE`` or ``~/.cache/upft-ray``)."""
    return Path(os.environ.get("UPFT_CACHE", Path.home() / ".cache" / "upft-ray")).expanduser()


def torch_extensions_dir() -> Path:
    """Return where DeepSpeed's compiled ops are cached (compiling them costs 1-2 min each)."""
    return Path(os.environ.get("TORCH_EXTENSIONS_DIR", cache_dir() / "torch_extensions"))
