#!/usr/bin/env bash
# One command on a fresh machine: set up, then run the default test suite (slow tests excluded;
# `scripts/test.sh -m slow` runs only those, `scripts/test.sh -m ""` runs everything).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [[ " $* " == *" -m "* ]]; then
  exec .venv/bin/python -m pytest "$@"
fi
exec .venv/bin/python -m pytest -m "not slow" "$@"
