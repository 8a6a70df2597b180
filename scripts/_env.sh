# Shared set-up for scripts/test.sh and scripts/demo.sh: installs the pinned uv if it is missing and
# syncs .venv to uv.lock. Needs only Python 3.10+ and access to the package index.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1  # Playwright drives Debian's chromium; never download a browser
source "$(dirname "${BASH_SOURCE[0]}")/_uv.sh"
# The interpreter itself, not a launcher such as pyenv's shim: given another path to the same Python,
# uv replaces the whole environment, under any process that is using it. Bytecode compiled once, at
# install: every Python process the tests start (pytest-xdist workers, the Airflow command line, tasks
# run in child processes) would otherwise compile Airflow's thousands of modules again wherever
# bytecode cannot be written (PYTHONDONTWRITEBYTECODE, read-only installs).
uv sync --frozen --quiet --compile-bytecode --python "$(python3 -c 'import sys; print(sys.executable)')"
