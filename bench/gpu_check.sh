#!/usr/bin/env bash
# GPU check of the real training loop (torchrun + NCCL, ZeRO 1/2/3 bf16, kill/resume, export, tokens/s, MFU).
#   bench/gpu_check.sh [--out DIR]            on a GPU machine (figures: DIR/gpu_check.json, default $OUT or bench/)
#   bench/gpu_check.sh --tiny [--out DIR]     the same script on CPU: gloo, 2 processes, a 2-layer model
# Needs torch, transformers, numpy, pyarrow, pyyaml and deepspeed; not Ray, not vLLM. Missing packages can be
# given as wheels: UPFT_WHEELS=/path/to/dir-of-wheels (deepspeed's py3-none-any wheel + hjson, pydantic, ...,
# pyarrow if absent); they are installed with --no-deps into a private directory. DeepSpeed compiles no CUDA op
# (the loop uses torch's fused AdamW), except with --offload (its CPU Adam is JIT-built: needs a C++ compiler). Time on one H100 (2026-11-27): ZeRO 1 and 2 ~3.5 min each, ZeRO 3 ~4 min
# (bench/results/gpu_check_h100): all three do not fit one 10-minute device call, so run `--stages 1,2`, then
# `--stages 3` (each writes gpu_check.json after every stage; the script is killed at 570 s).
# Throughput and MFU (issue 26), one 10-minute call each (--throughput-only: the plain run only, no kill/resume):
#   --throughput-only --stages 1 --tag 05b                           0.5B, ZeRO-1, bf16, packed: the new paths
#   --throughput-only --stages 1 --tag 05b-old --loss-path reference --attention sdpa     the old paths: the ratio
#   --throughput-only --stages 1 --shape 1.5b --tag 15b              1.5B (model written from its config here)
#   --throughput-only --stages 2 --offload --gradient-checkpointing --no-packing --tag paper   the paper settings
#   --throughput-only --stages 1 --gradient-checkpointing selective --tag 05b-sac    selective recompute's cost
#   --throughput-only --stages 1 --no-packing --tag 05b-unpacked, then the same with --pad-to-multiple-of 8
#     --tag 05b-unpacked-pad8: what padding widths to a multiple of 64 (the CPU default) costs unpacked rows on a GPU
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ -n "${UPFT_WHEELS:-}" ]; then
  SITE="${TMPDIR:-/tmp}/upft-gpu-check-site"
  "$PY" -m pip install --quiet --no-index --no-deps --upgrade --target "$SITE" "$UPFT_WHEELS"/*.whl
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export DS_BUILD_OPS=0 TOKENIZERS_PARALLELISM=false
LIMIT=570
if [[ " $* " == *" --tiny "* ]]; then export DS_ACCELERATOR=cpu; LIMIT=900; fi  # CPUs may be shared and busy
exec timeout "$LIMIT" "$PY" bench/gpu_check.py "$@"
