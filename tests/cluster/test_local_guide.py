"""cluster/README.md's local guide, run as written: a real Ray head, `ray job submit --working-dir .`,
the quickstart pipeline through the Jobs API, the run directory checked, the head stopped."""

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request

import psutil
import pytest
from conftest import REPO

GUIDE = REPO / "cluster" / "README.md"
SECTION = "## On this machine"


def guide_blocks() -> list[str]:
    """Return the bash blocks of the guide's local section, in order."""
    text = GUIDE.read_text()
    section = text[text.index(SECTION):]
    section = section[:section.find("\n## ", 1)] if "\n## " in section[1:] else section
    return re.findall(r"```bash\n(.*?)```", section, flags=re.S)


def _head_processes(temp_dir: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if any(temp_dir in part for part in proc.info["cmdline"] or []):
            found.append(proc)
    return found


def _wait_for_dashboard(port: int, head: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        assert head.poll() is None, f"ray start exited with {head.returncode}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/version", timeout=2):
                return
        except urllib.error.HTTPError:  # 401 without the auth token: up all the same
            return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"the Ray dashboard on port {port} did not answer in {timeout_s}s")


def head_argv(head_block: str) -> list[str]:
    """Return the `ray start` command of the guide's head block."""
    return shlex.split(next(line for line in head_block.splitlines() if line.startswith("ray start")))


def test_guide_shows_a_head_command_and_the_submission():
    head, client = guide_blocks()
    argv = head_argv(head)
    assert argv[:3] == ["ray", "start", "--head"] and "--block" in argv
    ports = {a.split("=")[0]: a.split("=")[1] for a in argv if a.startswith("--") and "=" in a}
    assert ports["--port"] != "6379" and ports["--dashboard-port"] != "8265"  # leave a default Ray alone
    assert "ray job submit" in client and "--working-dir ." in client


@pytest.mark.slow  # ~5 min: run by CI through `scripts/test.sh -m slow` (.ci/run)
def test_local_guide_runs_the_pipeline_through_ray_job_submit():
    head_block, client_block = guide_blocks()
    options = {a.split("=")[0]: a.split("=", 1)[1] for a in head_argv(head_block) if a.startswith("--") and "=" in a}
    temp_dir, port = options["--temp-dir"], int(options["--dashboard-port"])
    run_dir = REPO / "runs" / "cluster-local"
    shutil.rmtree(run_dir, ignore_errors=True)  # the guide's run directory: start from nothing
    for proc in _head_processes(temp_dir):  # a head left by an earlier, interrupted test run
        proc.kill()

    # The head block runs as a terminal would run it: its own process group, stopped by Ctrl-C (SIGINT).
    head = subprocess.Popen(["bash", "-c", head_block], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_for_dashboard(port, head)
        script = "set -euo pipefail\n" + client_block
        client = subprocess.run(["bash", "-c", script], cwd=REPO, capture_output=True, text=True, timeout=900)
        output = client.stdout + client.stderr
        assert client.returncode == 0, output[-5000:]
        assert "Job 'upft-local-quickstart' succeeded" in output, output[-3000:]  # ray job status
        assert "| UPFT |" in output and "| base |" in output  # `upft report` printed the comparison
    finally:
        os.killpg(head.pid, signal.SIGINT)  # the guide's Ctrl-C
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
        time.sleep(2)
        leftover = _head_processes(temp_dir)
        for proc in leftover:
            proc.kill()
    assert not leftover, f"Ctrl-C left Ray processes running: {[p.pid for p in leftover]}"

    for rel in ("report.md", "sample/manifest.json", "train/manifest.json", "train/final/model.safetensors",
                "eval_base/metrics.json", "eval/metrics.json", "eval/arith-eval.parquet"):
        assert (run_dir / rel).is_file(), rel
    sample = json.loads((run_dir / "sample" / "manifest.json").read_text())
    assert sample["counts"]["rows_in"] == 24 == sample["counts"]["questions_written"] + sample["counts"]["rows_rejected"]
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())["benchmarks"]["arith-eval"]
    assert metrics["rows_read"] == 8 == metrics["graded"] + metrics["rows_rejected"]
