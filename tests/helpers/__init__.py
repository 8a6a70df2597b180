"""
What the tests share: fixtures (loaded for every test by ``tests/conftest.py``) and helpers that the
test modules, the benchmarks and the scripts import (``from helpers.recording_server import ...``;
the ``tests`` folder is on ``sys.path``).

- ``sandbox_fixtures``, ``postgres_fixtures``, ``fixtures``: pytest fixtures.
- ``airflow_harness``: runs a DAG in the test process (``dag_runner``), no Airflow process.
- ``airflow_processes``, ``airflow_ui``: Airflow's own processes on a free port, stopped by process ID.
- ``dag_helpers``, ``approval_helpers``, ``browser_helpers``, ``webhook_helpers``, ``window_helpers``:
  what tests of one kind repeat (Messenger's 24-hour window for ``window_helpers``).
- ``benchmark_runner``: runs a script of ``benchmarks/`` as a user runs it.
- ``recording_server``, ``redis_server``: a server that records what it receives; Debian's Redis.
- ``ledger_racer``, ``scheduler_hold``: run in a child process, or installed in Airflow's config.
"""
