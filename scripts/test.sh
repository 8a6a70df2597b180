#!/usr/bin/env bash
# Checks and tests, from the pinned development environment (uv.lock).
#
#   ./scripts/test.sh            everything, as CI runs it: ruff, mypy, the docs build, the three test
#                                tiers (unit, integration, system), then the unit tier and the webhook,
#                                approval and held-message tests on the oldest Airflow release claimed
#                                (3.1.8).
#                                As root, it first installs with apt-get the Debian packages the
#                                tests start when they are missing: redis-server, postgresql, chromium.
#   ./scripts/test.sh --fast     ruff, mypy and the unit tier (no Airflow process, no server): the
#                                loop to run while changing code, under 2 minutes on 2 cores.
#   ./scripts/test.sh ARGS...    ruff, mypy, then pytest with your arguments (a tier's folder, a file,
#                                -k broadcast, -m "not browser"...).
set -euo pipefail
cd "$(dirname "$0")/.."

# The release the unit tier (and the webhook's and approvals' tests) also run on: the oldest claimed.
OLDEST_AIRFLOW=3.1.8

MODE=all
if [[ ${1:-} == --fast ]]; then
  MODE=fast
  shift
elif [[ $# -gt 0 ]]; then
  MODE=args
fi

started=$SECONDS
case $MODE in
  fast) echo "test.sh --fast: ruff, mypy and the unit tier (tests/unit)." ;;
  args) echo "test.sh: ruff, mypy, then pytest $*" ;;
  all)
    echo "test.sh: ruff, mypy, the docs build, the unit, integration and system tiers, then the unit tier"
    echo "and the webhook, approval and held-message tests on Airflow $OLDEST_AIRFLOW. Run as root, it first installs with"
    echo "apt-get the Debian packages the tests start when they are missing: redis-server, postgresql, chromium."
    ;;
esac
source scripts/_env.sh

if [[ $MODE == all ]]; then
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
fi

echo "ruff check, ruff format --check, mypy..."
uv run --frozen ruff check .
uv run --frozen ruff format --check .
uv run --frozen mypy

if [[ $MODE == fast ]]; then
  # Four workers on two cores: the unit tier waits more than it computes (servers' answers, leases,
  # retries), so two more workers fill the waits (measured on a quiet machine: 154 s with two
  # workers, 115 s with four; six were no faster than four). A -n of yours comes later and wins.
  uv run --frozen pytest tests/unit -n 4 "$@"
  echo "test.sh --fast: done in $((SECONDS - started)) s"
  exit 0
fi
if [[ $MODE == args ]]; then
  exec uv run --frozen pytest "$@"
fi

./scripts/docs.sh

# Each tier is its own pytest run, announced, so that a tier of long tests is not taken for a hang;
# every tier runs even when one fails, and the summary says which failed.
failed=()
tier() {
  local name=$1 what=$2 t0=$SECONDS status=0
  shift 2
  echo
  echo "== $name: $what"
  "$@" || status=$?
  echo "== $name: exit $status after $((SECONDS - t0)) s"
  [[ $status == 0 ]] || failed+=("$name")
}
tier "unit tier" "no Airflow process, no server but the sandbox and recorders in the test process" \
  uv run --frozen pytest tests/unit
tier "integration tier" "Airflow's own processes, Redis, PostgreSQL, moto's S3, chromium; tests of minutes each" \
  uv run --frozen pytest tests/integration --verbose
tier "system tier" "the scale scenario and the benchmarks" \
  uv run --frozen pytest tests/system --verbose
tier "Airflow $OLDEST_AIRFLOW" "the unit tier, the webhook's, approvals' and held messages' tests, under its constraints" \
  ./scripts/test-airflow.sh "$OLDEST_AIRFLOW" --integration

echo
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "test.sh: FAILED: ${failed[*]} ($((SECONDS - started)) s in all)"
  exit 1
fi
echo "test.sh: everything passed in $((SECONDS - started)) s"
