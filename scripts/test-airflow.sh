#!/usr/bin/env bash
# Tests the provider on one Airflow release, installed as a user installs it: a virtual environment
# with `apache-airflow==<version>`, the provider built from this tree and the test dependencies, all
# resolved under Airflow's constraints for that release and this Python; then pytest there.
#
#   scripts/test-airflow.sh 3.1.8                  the unit tier: no Airflow process, no server
#   scripts/test-airflow.sh 3.1.8 --integration    and the webhook, approval and held-message tests on real Airflow
#   scripts/test-airflow.sh 3.2.2 -- -k receiver   pytest's own arguments after --
#
# The constraints: AIRFLOW_CONSTRAINTS=<file or URL> when set; else Airflow's published file
# (constraints-<version>/constraints-<python>.txt on Airflow's GitHub repository); where that cannot
# be downloaded, a file made the way Airflow makes it: apache-airflow[all] (every provider) resolved
# to the highest versions the package index had an hour after the release (uv's --exclude-newer).
#
# The environment lives in $AHACHAT_AIRFLOW_VENVS (default ~/.cache/airflow-provider-ahachat) and is
# reused: a second run installs only the provider again (uv's cache keeps every download).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[[ $# -ge 1 && $1 =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || usage
AIRFLOW_VERSION=$1
shift
INTEGRATION=0
PYTEST_ARGS=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --integration) INTEGRATION=1 ;;
    --) shift; PYTEST_ARGS=("$@"); break ;;
    *) usage ;;
  esac
  shift
done

source scripts/_uv.sh

# Runs "$@" and says every 15 s that it still runs: a first install downloads for minutes.
ticking() {
  local label=$1 t0=$SECONDS status=0 ticker
  shift
  # To stderr: the command's own output may be redirected into a file (the constraints).
  (while sleep 15; do echo "  ... $label: $((SECONDS - t0)) s" >&2; done) &
  ticker=$!
  "$@" || status=$?
  kill "$ticker" 2>/dev/null
  wait "$ticker" 2>/dev/null || true
  return $status
}
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1  # the browser tests use Debian's chromium, and are not run here
PYTHON=$(python3 -c 'import sys; print(sys.executable)')
PYTHON_VERSION=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
VENV=${AHACHAT_AIRFLOW_VENVS:-${XDG_CACHE_HOME:-$HOME/.cache}/airflow-provider-ahachat}/airflow-$AIRFLOW_VERSION-py$PYTHON_VERSION
mkdir -p "$VENV.d"
started=$SECONDS

# The constraints.
OFFICIAL="https://raw.githubusercontent.com/apache/airflow/constraints-$AIRFLOW_VERSION/constraints-$PYTHON_VERSION.txt"
CONSTRAINTS=$VENV.d/constraints.txt
if [[ -n ${AIRFLOW_CONSTRAINTS:-} ]]; then
  echo "Constraints: $AIRFLOW_CONSTRAINTS"
  CONSTRAINTS=$AIRFLOW_CONSTRAINTS
elif [[ -s $CONSTRAINTS ]]; then
  echo "Constraints: $(head -1 "$CONSTRAINTS" | sed 's/^# //') (kept from an earlier run: $CONSTRAINTS)"
elif curl -fsSL --max-time 20 -o "$CONSTRAINTS.new" "$OFFICIAL" 2>/dev/null; then
  { echo "# Airflow's constraints for $AIRFLOW_VERSION and Python $PYTHON_VERSION, from $OFFICIAL"
    cat "$CONSTRAINTS.new"; } >"$CONSTRAINTS"
  rm "$CONSTRAINTS.new"
  echo "Constraints: Airflow's, from $OFFICIAL"
else
  rm -f "$CONSTRAINTS.new"
  AS_OF=$(scripts/airflow_release_time.py "$AIRFLOW_VERSION")
  echo "Constraints: $OFFICIAL cannot be downloaded from here."
  echo "  Made as Airflow makes them instead: apache-airflow[all]==$AIRFLOW_VERSION (every provider) resolved"
  echo "  to the highest versions the package index had an hour after the release ($AS_OF)."
  echo "  About 2 minutes, once. Set AIRFLOW_CONSTRAINTS=<file or URL> to use Airflow's own file."
  echo "# Made here: apache-airflow[all]==$AIRFLOW_VERSION resolved as of $AS_OF (Airflow's file was out of reach)" \
    >"$CONSTRAINTS.new"
  echo "apache-airflow[all]==$AIRFLOW_VERSION" >"$VENV.d/all.in"
  ticking "resolving every provider" uv pip compile --quiet --python "$PYTHON" --resolution highest \
    --exclude-newer "$AS_OF" --no-header --no-annotate "$VENV.d/all.in" >>"$CONSTRAINTS.new"
  mv "$CONSTRAINTS.new" "$CONSTRAINTS"
fi

# The environment.
if [[ ! -x $VENV/bin/python ]]; then
  echo "Creating $VENV (Python $PYTHON_VERSION)"
  uv venv --quiet --python "$PYTHON" "$VENV"
fi
PACKAGES=("apache-airflow==$AIRFLOW_VERSION")
if [[ $AIRFLOW_VERSION == 3.1.* ]]; then
  # Airflow 3.1 builds a connection form's extra fields only with Flask-AppBuilder (the FAB provider).
  PACKAGES+=(apache-airflow-providers-fab)
fi
echo "Installing ${PACKAGES[*]}, the provider from this tree and the test dependencies"
echo "  (the first time about 2 minutes: the downloads are uv's cache afterwards)"
ticking "installing" uv pip install --quiet --python "$VENV/bin/python" --compile-bytecode \
  --constraint "$CONSTRAINTS" "${PACKAGES[@]}" --reinstall-package airflow-provider-ahachat . --group dev
(cd / && "$VENV/bin/python" -) <<'EOF'
from importlib.metadata import version

import airflow_provider_ahachat

names = ("apache-airflow", "apache-airflow-task-sdk", "apache-airflow-providers-standard", "fastapi",
         "cryptography", "sqlalchemy", "pydantic")
print("Installed (%s): %s" % (airflow_provider_ahachat.__file__.rsplit("/", 2)[0],
                             ", ".join(f"{name} {version(name)}" for name in names)))
EOF
echo "Environment ready in $((SECONDS - started)) s"

# The tests: the unit tier (tests/unit: no Airflow process, no server); with --integration also the
# webhook's, the approvals' and the held messages' tests of the integration tier, which start
# Airflow's own processes (the inbound code calls Airflow's internals, which differ by release).
# Not the attack tests (test_inbound_attack.py): they hold the scheduler's sweep of HITL timeouts by a
# hook on a method Airflow 3.3 added, so Airflow 3.1's scheduler does not start under them.
# The installed provider is tested, not this tree's source: pytest runs from the environment's bin
# folder, so the tree's root is not on sys.path.
SELECTION=(tests/unit)
if [[ $INTEGRATION == 1 ]]; then
  SELECTION+=(tests/integration/test_webhook_airflow.py tests/integration/test_approvals_airflow.py
    tests/integration/test_held_airflow.py)
fi
echo "Running pytest on Airflow $AIRFLOW_VERSION: ${SELECTION[*]} ${PYTEST_ARGS[*]}"
tests_started=$SECONDS
status=0
"$VENV/bin/pytest" -p no:cacheprovider "${SELECTION[@]}" "${PYTEST_ARGS[@]}" || status=$?
echo "Airflow $AIRFLOW_VERSION: pytest exited $status after $((SECONDS - tests_started)) s ($((SECONDS - started)) s in all)"
exit $status
