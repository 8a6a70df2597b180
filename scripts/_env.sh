# Shared set-up for the scripts: installs the pinned uv if it is missing and syncs .venv to uv.lock.
# Needs only Python 3.10+ and access to the package index. Also defines `say_while`.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1  # Playwright drives Debian's chromium; never download a browser

# `say_while WHAT CMD...` says "WHAT...", runs CMD and, while it runs, says every 8 seconds that WHAT
# is still going on: a long step (a first install, apt-get) is never silent. Returns CMD's status.
say_while() {
  local what=$1 status=0 ticker
  shift
  echo "$what..." >&2
  (
    trap 'exit 0' TERM
    local waited=0
    while sleep 8; do waited=$((waited + 8)); echo "  ...$what: still going (${waited}s)" >&2; done
  ) &
  ticker=$!
  "$@" || status=$?
  kill "$ticker" 2>/dev/null || true
  wait "$ticker" 2>/dev/null || true
  return "$status"
}

source "$(dirname "${BASH_SOURCE[0]}")/_uv.sh"
# Once per run: a script that another script calls (test.sh runs docs.sh) finds it done, as long as
# uv.lock has not changed since.
if [[ "${AHACHAT_ENV_SYNCED:-}" != "$(cksum < uv.lock)" ]]; then
  # The interpreter itself, not a launcher such as pyenv's shim: given another path to the same Python,
  # uv replaces the whole environment, under any process that is using it. Bytecode compiled once, at
  # install: every Python process the tests start (pytest-xdist workers, the Airflow command line, tasks
  # run in child processes) would otherwise compile Airflow's thousands of modules again wherever
  # bytecode cannot be written (PYTHONDONTWRITEBYTECODE, read-only installs).
  say_while "Syncing .venv to uv.lock" \
    uv sync --frozen --quiet --compile-bytecode --python "$(python3 -c 'import sys; print(sys.executable)')"
  AHACHAT_ENV_SYNCED="$(cksum < uv.lock)"
  export AHACHAT_ENV_SYNCED
fi
