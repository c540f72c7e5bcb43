"""Every name bench/ scripts import from upft_ray exists (imports inside functions included): a benchmark run
rarely, after a refactor, must not be the first to find a renamed function."""

import ast
import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = sorted((REPO / "bench").glob("*.py"))


def _package_imports(path: Path) -> list[tuple[int, str, str]]:
    """Return (line, module, name) of every ``from upft_ray... import name`` in the file at ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return [(node.lineno, node.module, alias.name) for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "upft_ray"
            for alias in node.names]


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_bench_script_imports_names_that_exist(script):
    missing = []
    for line, module, name in _package_imports(script):
        imported = importlib.import_module(module)
        if not hasattr(imported, name):
            try:
                importlib.import_module(f"{module}.{name}")  # a submodule
            except ModuleNotFoundError:
                missing.append(f"{script.name}:{line}: {module}.{name}")
    assert not missing, "bench imports names that no longer exist: " + ", ".join(missing)
