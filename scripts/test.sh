#!/usr/bin/env bash
# Sets up the pinned development environment (uv.lock) and runs every check and test.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_env.sh
source scripts/_apt.sh
# PostgreSQL for the SQL transfer's tests (each test run starts its own throw-away cluster).
need_apt postgresql || echo "Without PostgreSQL, its tests are skipped." >&2

uv run --frozen ruff check .
uv run --frozen ruff format --check .
uv run --frozen mypy
uv run --frozen pytest "$@"
