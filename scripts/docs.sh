#!/usr/bin/env bash
# Builds the docs site from docs/ into docs/_build/html with Sphinx, every warning an error.
# Pass Sphinx's own options through (e.g. -E to rebuild every page).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_env.sh
started=$SECONDS
echo "Building the docs into docs/_build/html (Sphinx; a warning fails the build)..."
uv run --frozen sphinx-build --fail-on-warning --keep-going --quiet --jobs auto \
  --builder html "$@" docs docs/_build/html
echo "Docs built in $((SECONDS - started)) s: open docs/_build/html/index.html"
