# Shared set-up for scripts/test.sh and scripts/demo.sh: installs the pinned uv if missing and
# syncs .venv to uv.lock. Needs only Python 3.10+ and access to the package index.
UV_VERSION=0.13.8
export UV_PYTHON_DOWNLOADS=never
if ! command -v uv >/dev/null 2>&1 || [[ "$(uv --version | cut -d' ' -f2)" != "$UV_VERSION" ]]; then
  python3 -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
  export PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
fi
uv sync --frozen --quiet --python "$(command -v python3)"
