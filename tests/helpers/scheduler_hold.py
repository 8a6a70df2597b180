"""
Copied as ``airflow_local_settings.py`` into the ``config`` folder of a test's ``AIRFLOW_HOME``: holds
the scheduler once, right after it has read a DAG's asset queue rows to create an asset-triggered
run, until the test says go, so that the test can record events in that window. With
``AHACHAT_TEST_SWEEP_GATE`` set to a file's path, the scheduler also skips its sweep of the
Human-in-the-loop tasks whose deadline has passed while that file exists, so that a test can answer
a task that still waits for input after its deadline.

The window exists in every scheduler loop that creates such a run (it lasts a few milliseconds, or
more on a busy machine); holding it open makes the race it allows happen every time. With
``AHACHAT_TEST_HOLD_DIR`` set, the scheduler process writes ``held`` in that folder when it holds,
and goes on when ``go`` appears there (or after :data:`HOLD_AT_MOST` seconds). Other processes, and
any run without the variable, are left alone.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

#: Airflow copies a local settings module's public names into its settings: none here.
__all__: list[str] = []

#: The scheduler waits at most this long for ``go``.
HOLD_AT_MOST = 300.0


def _is_queue_read_for_a_run(statement: str) -> bool:
    """The scheduler's read of a DAG's queue rows just before it creates the run."""
    text = " ".join(statement.split())
    return (
        text.startswith("SELECT")
        and "FROM asset_dag_run_queue" in text
        and "asset_dag_run_queue.target_dag_id = " in text
        and "ORDER BY asset_dag_run_queue.created_at DESC" in text
    )


def _install(folder: Path) -> None:
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    held, go = folder / "held", folder / "go"

    def hold(*args: Any) -> None:
        statement = args[2]
        if held.exists() or not _is_queue_read_for_a_run(statement):
            return
        held.write_text(f"{time.time()}\n")
        deadline = time.monotonic() + HOLD_AT_MOST
        while not go.exists() and time.monotonic() < deadline:
            time.sleep(0.05)

    event.listen(Engine, "after_cursor_execute", hold)


def _gate_the_sweep(gate: Path) -> None:
    from airflow.jobs.scheduler_job_runner import SchedulerJobRunner

    sweep = SchedulerJobRunner.check_awaiting_input_timeouts  # Airflow 3.3's HITL deadline sweep

    def gated(self: Any, *args: Any, **kwargs: Any) -> None:
        if not gate.exists():
            sweep(self, *args, **kwargs)

    SchedulerJobRunner.check_awaiting_input_timeouts = gated  # type: ignore[method-assign]


if os.environ.get("AHACHAT_TEST_HOLD_DIR") and sys.argv[1:2] == ["scheduler"]:
    _install(Path(os.environ["AHACHAT_TEST_HOLD_DIR"]))
if os.environ.get("AHACHAT_TEST_SWEEP_GATE") and sys.argv[1:2] == ["scheduler"]:
    _gate_the_sweep(Path(os.environ["AHACHAT_TEST_SWEEP_GATE"]))
