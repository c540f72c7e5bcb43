#!/usr/bin/env bash
# One command on a fresh machine: set up, then run UPFT end to end on local Ray with the bundled
# model and data (sample -> train -> evaluate), writing runs/quickstart/report.md.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/upft run --config configs/quickstart.yaml "$@"
