#!/usr/bin/env bash
# Sets up the pinned development environment (uv.lock) and runs every check and test.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_env.sh
source scripts/_apt.sh
# Real servers the tests start on 127.0.0.1 (Debian's packages): Redis for the shared rate limit.
need_apt redis-server || echo "redis-server is missing: the shared rate limit tests will be skipped" >&2

uv run --frozen ruff check .
uv run --frozen ruff format --check .
uv run --frozen mypy
uv run --frozen pytest "$@"
