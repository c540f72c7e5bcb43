"""The house: the package layout matches docs/ARCHITECTURE.md, no import goes in a circle or up a layer,
imports inside functions are only of heavy libraries (and say so), functions stay short, and importing
the package or asking for help loads no heavy library."""

import ast
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO

PACKAGE = REPO / "upft_ray"
# Imported inside the functions that use them, so `import upft_ray` and `upft --help` stay fast.
HEAVY = {"ray", "torch", "vllm", "deepspeed", "transformers", "matplotlib", "scipy", "math_verify", "sympy",
         "huggingface_hub", "safetensors", "tensorboard", "gguf"}
MAX_TOP_MODULES = 6
MAX_FUNCTION_LINES = 50


def module_name(path: Path, root: Path = REPO) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, module: str, modules: set[str]) -> set[str]:
    """Return the upft_ray modules ``path`` imports: at module level, inside functions, and in TYPE_CHECKING
    blocks (a circle through annotations is a circle too)."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    own_packages = {module.rsplit(".", k)[0] for k in range(1, module.count(".") + 1)}
    found: set[str] = set()

    def add(name: str) -> None:
        while name:  # importing a.b.c runs a/__init__ and a/b/__init__ too (unless a module's own package)
            if name in modules and name not in own_packages:
                found.add(name)
            name = name.rpartition(".")[0]

    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            add(base)
            for alias in node.names:
                if f"{base}.{alias.name}" in modules:  # `from upft_ray.sampling import stage`
                    found.add(f"{base}.{alias.name}")
    found.discard(module)
    return found


def import_graph(root: Path = REPO) -> dict[str, set[str]]:
    paths = {module_name(p, root): p for p in (root / "upft_ray").rglob("*.py")}
    return {m: imports(p, m, set(paths)) for m, p in paths.items()}


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Return the strongly connected groups of modules that import each other (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def test_no_module_imports_back_into_a_module_that_imports_it():
    assert not cycles(import_graph()), "import cycles"


def test_the_cycle_check_sees_function_level_and_type_checking_imports(tmp_path):
    pkg = tmp_path / "upft_ray"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "a.py").write_text("def f():\n    from upft_ray.b import g\n")
    (pkg / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from upft_ray import c\n")
    (pkg / "c.py").write_text("import upft_ray.a\n")
    (pkg / "sub" / "__init__.py").write_text("from upft_ray.sub.x import f\n")
    (pkg / "sub" / "x.py").write_text("from upft_ray.sub.y import g\n")  # a sibling, not a cycle via sub/__init__
    (pkg / "sub" / "y.py").write_text("")
    graph = import_graph(tmp_path)
    assert graph["upft_ray.sub.x"] == {"upft_ray.sub.y"}
    assert cycles(graph) == [{"upft_ray.a", "upft_ray.b", "upft_ray.c"}]


def layer_rules() -> dict[str, set[str]]:
    """Return {package: the packages it may import} from docs/ARCHITECTURE.md's table."""
    text = (REPO / "docs" / "ARCHITECTURE.md").read_text()
    table = text[text.index("<!-- layout table"):text.index("<!-- end of layout table")]
    rules = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith(("`", "top")):
            continue
        name = "(top)" if cells[0].startswith("top") else cells[0].strip("`")
        rules[name] = {"*"} if "every package" in cells[2] else {c.strip(" `") for c in cells[2].split(",") if c.strip()}
    return rules


def package_of(module: str) -> str:
    parts = module.split(".")
    return "(top)" if len(parts) == 2 and parts[1] in ("api", "cli", "__main__") else parts[1] if len(parts) > 1 \
        else "(top)"


def test_every_package_imports_only_what_the_architecture_allows():
    rules = layer_rules()
    packages = {package_of(m) for m in import_graph()} - {"(top)"}
    assert packages <= set(rules), f"packages the architecture document does not list: {packages - set(rules)}"
    wrong = []
    for module, targets in import_graph().items():
        mine = package_of(module)
        for target in targets:
            theirs = package_of(target)
            if target != "upft_ray" and theirs != mine and "*" not in rules[mine] and theirs not in rules[mine]:
                wrong.append(f"{module} -> {target}")
    assert not wrong, f"imports docs/ARCHITECTURE.md does not allow: {wrong}"


def _function_level_imports(path: Path):
    tree = ast.parse(path.read_text())
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    yield fn, node


def test_imports_inside_functions_are_heavy_libraries_and_say_so():
    wrong = set()
    for path in PACKAGE.rglob("*.py"):
        lines = path.read_text().splitlines()
        for fn, node in _function_level_imports(path):
            name = (node.names[0].name if isinstance(node, ast.Import) else node.module or "").split(".")[0]
            where = f"{path.relative_to(REPO)}:{node.lineno} ({fn.name})"
            if name not in HEAVY:
                wrong.add(f"{where}: {name} is not heavy; import it at the top")
            elif not any("#" in line and "heavy" in line.split("#", 1)[1] for line in lines[node.lineno - 1:node.end_lineno]):
                wrong.add(f"{where}: say why it is imported here (# heavy: ...)")
    assert not wrong, sorted(wrong)


def test_few_modules_at_the_top_and_short_functions():
    top = [p.name for p in PACKAGE.glob("*.py")]
    assert len(top) <= MAX_TOP_MODULES, top
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long


def test_import_loads_no_heavy_library():
    code = ("import sys, upft_ray, upft_ray.cli, upft_ray.api, upft_ray.config; "
            f"heavy = [m for m in {sorted(HEAVY)!r} if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == ""


def test_help_lists_commands_quickly():
    upft = [sys.executable, "-m", "upft_ray.cli", "--help"]
    subprocess.run(upft, capture_output=True, check=True, timeout=120)  # warm the bytecode cache
    start = time.time()
    out = subprocess.run(upft, capture_output=True, text=True, check=True, cwd=REPO, timeout=120)
    assert time.time() - start < 3.0
    for command in ("sample", "train", "evaluate", "run", "report", "sweep", "analyze", "models"):
        assert command in out.stdout
    assert "--verbose" in out.stdout and "--quiet" in out.stdout


def test_readme_cli_block_lists_every_command():
    import typer.main

    from upft_ray.cli import app

    readme = (REPO / "README.md").read_text()
    lines = [line.split() for line in readme[readme.index("## CLI"):].split("```")[1].splitlines() if line]
    for name, command in typer.main.get_command(app).commands.items():
        subs = sorted(getattr(command, "commands", {}) or [None])
        for sub in subs:  # `upft analyze consistency`, or `upft models list | prepare [NAME]`
            assert any(words[:2] == ["upft", name] and (sub is None or sub in words) for words in lines), (name, sub)


@pytest.mark.parametrize("doc", ["README.md", "docs/ARCHITECTURE.md"])
def test_every_package_is_described(doc):
    text = (REPO / doc).read_text()
    for package in sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()):
        assert f"{package}" in text, f"{doc} does not mention upft_ray/{package}"
