# Shared helper: puts the pinned uv on PATH, installing it with pip when it is missing or another
# version. Needs only Python 3.10+ and access to the package index.
UV_VERSION=0.13.8
export UV_PYTHON_DOWNLOADS=never
if ! command -v uv >/dev/null 2>&1 || [[ "$(uv --version | cut -d' ' -f2)" != "$UV_VERSION" ]]; then
  echo "Installing uv $UV_VERSION (the pinned version) with pip" >&2
  if python3 -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION" 2>/dev/null; then
    PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
  else  # a Python that refuses installs of its own (PEP 668): use a private virtual environment
    python3 -m venv .tools
    .tools/bin/python -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
    PATH="$PWD/.tools/bin:$PATH"
  fi
  export PATH
fi
