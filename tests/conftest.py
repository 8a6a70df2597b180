"""Pytest configuration: a hermetic, throw-away Airflow environment for the test session.

Everything at module level here runs when pytest imports this conftest, which is before any
test module (and therefore before ``airflow``) is imported.  Airflow reads ``AIRFLOW_HOME`` and
most of its configuration once, at import time, so these variables MUST be in place first:

* ``AIRFLOW_HOME`` -> a fresh ``tempfile.mkdtemp()`` directory, removed at interpreter exit.
  ``~/airflow`` is never read or written.  Each pytest-xdist worker gets its own directory
  (and its own SQLite DB) because each worker process imports this conftest itself.
* the metadata DB is SQLite inside that directory; the DAGs folder is an empty directory in it.
* ``unit_test_mode`` makes Airflow skip (and never write) ``airflow.cfg`` and lets unit tests
  call ``operator.execute(context)`` directly without the "cannot be called outside of the
  Task Runner" guard.
* pre-existing ``AIRFLOW__*``, ``AIRFLOW_CONN_*``, ``AIRFLOW_VAR_*`` and ``AIRFLOW_CONFIG``
  variables from the caller's shell are removed so a developer's local setup (for example a
  Postgres ``SQL_ALCHEMY_CONN``) can never leak into the tests.  Set
  ``AHACHAT_TESTS_KEEP_AIRFLOW_ENV=1`` to keep them (e.g. to debug with
  ``AIRFLOW__LOGGING__LOGGING_LEVEL=DEBUG``); the settings below still win.

Nothing here imports Airflow.  Tests that don't use the ``airflow_db`` / ``dag_runner``
fixtures (e.g. pure HTTP-client tests) pay neither the Airflow import (~3 s) nor the DB
initialisation (~1.6 s).
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if "airflow" in sys.modules:  # pragma: no cover - defensive
    raise RuntimeError(
        "airflow was imported before tests/conftest.py could point AIRFLOW_HOME at a temporary "
        "directory; Airflow would use the caller's configuration/DB. Remove whatever imports "
        "airflow from a pytest plugin or a higher-level conftest."
    )

_TESTS_DIR = Path(__file__).resolve().parent
if str(_TESTS_DIR) not in sys.path:
    # Lets test modules, in any tier's folder, ``from helpers import ...`` under any --import-mode.
    sys.path.insert(0, str(_TESTS_DIR))


def _configure_airflow_environment() -> Path:
    if os.environ.get("AHACHAT_TESTS_KEEP_AIRFLOW_ENV") != "1":
        for name in list(os.environ):
            if name.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_")) or name == "AIRFLOW_CONFIG":
                del os.environ[name]

    home = Path(tempfile.mkdtemp(prefix="ahachat-airflow-home-")).resolve()
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    dags = home / "dags"
    dags.mkdir()
    (home / "plugins").mkdir()

    os.environ.update(
        {
            "AIRFLOW_HOME": str(home),
            # Read by airflow_harness to make sure it only ever initialises *this* DB.
            "AHACHAT_TEST_AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(home / "plugins"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            # Plain text logs: no ANSI colour codes splitting strings we grep for.
            "AIRFLOW__LOGGING__COLORED_CONSOLE_LOG": "False",
            # Connections must come from AIRFLOW_CONN_* env vars (and the metadata DB) only,
            # and must be looked up afresh on every access.
            "AIRFLOW__SECRETS__BACKEND": "",
            "AIRFLOW__SECRETS__USE_CACHE": "False",
        }
    )
    return home


AIRFLOW_TEST_HOME: Path = _configure_airflow_environment()

#: The shared fixtures: the sandbox (``sandbox``, ``sandbox_server``, ``sandbox_connection``...), a
#: throw-away PostgreSQL cluster (``postgres``), recording servers (``server``, ``elsewhere``).
pytest_plugins = ["helpers.sandbox_fixtures", "helpers.postgres_fixtures", "helpers.fixtures"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """
    Run the tests marked ``slow`` (or ``browser``, ``install``, ``airflow_processes``: slow too)
    first, in their collection order, then the rest.

    The workers of pytest-xdist (``--dist load --maxschedchunk 1``) take the next test whenever one
    ends, so long tests started first leave the short ones to fill the gaps and the workers finish
    together; a long test that comes last keeps one worker busy while the other idles.
    """
    slow = ("slow", "browser", "install", "airflow_processes")
    items.sort(key=lambda item: not any(item.get_closest_marker(name) for name in slow))


if TYPE_CHECKING:
    from helpers.airflow_harness import AirflowTestEnv, DagResult


@pytest.fixture(scope="session")
def airflow_db() -> AirflowTestEnv:
    """Import Airflow and create its metadata DB (once per session, ~1.6 s + ~3 s import).

    Request this (or ``dag_runner``) from any test that runs Airflow for real.
    """
    from helpers import airflow_harness

    return airflow_harness.init_airflow_db()


@pytest.fixture
def dag_runner(airflow_db: AirflowTestEnv) -> Callable[..., DagResult]:
    """``airflow_harness.run_dag`` with the metadata DB guaranteed to exist."""
    from helpers import airflow_harness

    def _run(dag: Any, conn_uris: Any = None, **kwargs: Any) -> DagResult:
        return airflow_harness.run_dag(dag, conn_uris, **kwargs)

    return _run
