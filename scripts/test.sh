#!/usr/bin/env bash
# Sets up the pinned development environment (uv.lock) and runs every check and test.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_env.sh
source scripts/_apt.sh
# The browser test drives Debian's chromium (never a downloaded browser); without it, it is skipped
# (and fails under CI).
need_apt chromium || echo "chromium is missing: the browser test will be skipped" >&2

uv run --frozen ruff check .
uv run --frozen ruff format --check .
uv run --frozen mypy
uv run --frozen pytest "$@"
