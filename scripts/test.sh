#!/usr/bin/env bash
# Sets up the pinned development environment (uv.lock) and runs every check and test.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_env.sh

uv run --frozen ruff check .
uv run --frozen ruff format --check .
uv run --frozen mypy
uv run --frozen pytest "$@"
