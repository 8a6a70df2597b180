#!/usr/bin/env bash
# Sets up the pinned environment (uv.lock) and runs the example DAG end to end on the local sandbox.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_env.sh

uv run --frozen python scripts/demo.py "$@"
