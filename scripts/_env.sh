# Shared set-up for scripts/test.sh and scripts/demo.sh: installs the pinned uv if it is missing and
# syncs .venv to uv.lock. Needs only Python 3.10+ and access to the package index.
UV_VERSION=0.13.8
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1  # Playwright drives Debian's chromium; never download a browser
export UV_PYTHON_DOWNLOADS=never
if ! command -v uv >/dev/null 2>&1 || [[ "$(uv --version | cut -d' ' -f2)" != "$UV_VERSION" ]]; then
  if python3 -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION" 2>/dev/null; then
    PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
  else  # a Python that refuses installs of its own (PEP 668): use a private virtual environment
    python3 -m venv .tools
    .tools/bin/python -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
    PATH="$PWD/.tools/bin:$PATH"
  fi
  export PATH
fi
# The interpreter itself, not a launcher such as pyenv's shim: given another path to the same Python,
# uv replaces the whole environment, under any process that is using it. Bytecode compiled once, at
# install: every Python process the tests start (pytest-xdist workers, the Airflow command line, tasks
# run in child processes) would otherwise compile Airflow's thousands of modules again wherever
# bytecode cannot be written (PYTHONDONTWRITEBYTECODE, read-only installs).
uv sync --frozen --quiet --compile-bytecode --python "$(python3 -c 'import sys; print(sys.executable)')"
