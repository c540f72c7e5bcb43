"""CI cannot hang: every test has a timeout, every subprocess a test starts is waited for with one, and
.ci/run puts an outer limit on each suite that names the test it stopped in."""

import ast
import subprocess
import sys
import tomllib

from conftest import REPO, SLOW_TEST_TIMEOUT_S

WAITS = {"run", "check_output", "check_call", "call", "wait", "communicate"}


def _calls_without_timeout(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        name, owner = node.func.attr, ast.unparse(node.func.value)
        if name not in WAITS or (name in ("run", "call", "check_output", "check_call") and owner != "subprocess"):
            continue
        if name in ("wait", "communicate") and owner in ("self._stop", "_stop", "done", "event"):
            continue
        if not any(k.arg == "timeout" for k in node.keywords) and not (name == "wait" and node.args):
            yield f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)[:80]}"


def test_every_subprocess_a_test_waits_for_has_a_timeout():
    missing = [m for folder in ("tests", "bench") for p in sorted((REPO / folder).rglob("*.py"))
               for m in _calls_without_timeout(p)]
    assert not missing, "\n".join(missing)


def test_every_test_has_a_timeout_and_slow_ones_a_longer_one():
    ini = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert 0 < int(ini["timeout"]) < SLOW_TEST_TIMEOUT_S
    out = subprocess.run([sys.executable, "-m", "pytest", "--co", "-q", "-m", "slow", "tests/sampling"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "test_engine_death" in out.stdout


def test_ci_runs_each_suite_under_an_outer_limit_that_names_the_test(tmp_path):
    script = (REPO / ".ci" / "run").read_text()
    assert script.count("suite ") >= 2 and "timeout --kill-after" in script and "UPFT_CI_STATUS" in script
    limits = [int(line.split()[1]) for line in script.splitlines() if line.startswith("suite ")]
    # Set-up runs inside the first suite's limit; with each limit's 60 s kill-after the run stays under 85 min
    # of CI's 90. The default suite's limit is ~1.5x what it takes here: CI ran it 1.25x slower than this machine.
    assert sum(limits) + 60 * len(limits) <= 85 * 60 and limits[0] <= 25 * 60
