#!/usr/bin/env bash
# Sets up the pinned development environment (uv.lock) and runs every check and test, and builds the
# docs. As root, it installs the Debian packages the tests need when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "test.sh: ruff, mypy, the docs build and every test. Run as root, it first installs with apt-get"
echo "the Debian packages the tests start when they are missing: redis-server, postgresql, chromium."
source scripts/_env.sh
source scripts/_apt.sh
# Real servers the tests start on 127.0.0.1 (Debian's packages): Redis for the shared rate limit,
# PostgreSQL for the SQL transfer (each test run starts its own throw-away cluster).
need_apt "the shared rate limit's tests" redis-server \
  || echo "redis-server is missing: the shared rate limit tests will be skipped" >&2
# The browser test drives Debian's chromium (never a downloaded browser); without it, it is skipped
# (and fails under CI).
need_apt "the browser tests" chromium || echo "chromium is missing: the browser test will be skipped" >&2
need_apt "the SQL transfer's tests" postgresql \
  || echo "postgresql is missing: the PostgreSQL tests will be skipped" >&2

echo "ruff check, ruff format --check, mypy..."
uv run --frozen ruff check .
uv run --frozen ruff format --check .
uv run --frozen mypy
./scripts/docs.sh
echo "pytest (the slow tests start first, so the first dots take a while)..."
uv run --frozen pytest "$@"
