"""The repository's folders the tests read, and the docs' examples loaded as modules."""

from __future__ import annotations

import importlib.util
import runpy
from pathlib import Path
from typing import Any

#: The repository's root.
ROOT = Path(__file__).resolve().parents[2]
#: ``tests/``: on ``sys.path``, so that ``helpers`` imports in a child interpreter too.
TESTS = ROOT / "tests"
#: The example DAGs (``example_dags/``).
EXAMPLE_DAGS = ROOT / "example_dags"
#: The benchmark scripts (``benchmarks/``).
BENCHMARKS = ROOT / "benchmarks"
#: The code the docs site shows (``docs/examples/``), included by markers.
DOCS_EXAMPLES = ROOT / "docs" / "examples"


def load_example(name: str) -> dict[str, Any]:
    """Run one file of ``docs/examples/`` as a module and return its names."""
    return runpy.run_path(str(DOCS_EXAMPLES / f"{name}.py"), run_name=f"docs_example_{name}")


def load_example_dag(name: str) -> Any:
    """The ``dag`` of ``example_dags/<name>.py``, imported as Airflow's DAG processor imports it."""
    spec = importlib.util.spec_from_file_location(name, EXAMPLE_DAGS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag
