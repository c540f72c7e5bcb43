"""Heavy libraries load lazily: importing the package and asking for help stay fast."""

import subprocess
import sys
import time

from conftest import REPO


def test_import_loads_no_heavy_library():
    code = ("import sys, upft_ray, upft_ray.cli, upft_ray.config, upft_ray.pipeline; "
            "heavy = [m for m in ('vllm', 'deepspeed', 'torch', 'ray', 'transformers') if m in sys.modules]; "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_help_lists_commands_quickly():
    upft = [sys.executable, "-m", "upft_ray.cli", "--help"]
    subprocess.run(upft, capture_output=True, check=True)  # warm the bytecode cache
    start = time.time()
    out = subprocess.run(upft, capture_output=True, text=True, check=True, cwd=REPO)
    assert time.time() - start < 3.0
    for command in ("sample", "train", "evaluate", "run", "report", "sweep", "analyze", "models"):
        assert command in out.stdout


def test_readme_cli_block_lists_every_command():
    import typer.main

    from upft_ray.cli import app

    readme = (REPO / "README.md").read_text()
    lines = [line.split() for line in readme[readme.index("## CLI"):].split("```")[1].splitlines() if line]
    for name, command in typer.main.get_command(app).commands.items():
        subs = sorted(getattr(command, "commands", {}) or [None])
        for sub in subs:  # `upft analyze consistency`, or `upft models list | prepare [NAME]`
            assert any(words[:2] == ["upft", name] and (sub is None or sub in words) for words in lines), (name, sub)
