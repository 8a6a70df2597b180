"""The repository's folders the tests read, and the docs' examples loaded as modules."""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any

#: The repository's root.
ROOT = Path(__file__).resolve().parents[2]
#: ``tests/``: on ``sys.path``, so that ``helpers`` imports in a child interpreter too.
TESTS = ROOT / "tests"
#: The code the docs site shows (``docs/examples/``), included by markers.
DOCS_EXAMPLES = ROOT / "docs" / "examples"


def load_example(name: str) -> dict[str, Any]:
    """Run one file of ``docs/examples/`` as a module and return its names."""
    return runpy.run_path(str(DOCS_EXAMPLES / f"{name}.py"), run_name=f"docs_example_{name}")
