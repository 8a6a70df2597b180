"""
A bulk task run by ``airflow tasks test`` in a child process, to be killed part-way while it sends:
the tests of a killed run (``tests/integration/test_bulk_kills.py``, ``test_s3_ledger.py``) share it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from airflow_provider_ahachat.sandbox import SandboxServer

CONN = "aha"


DAG_FILE = """
from __future__ import annotations

from airflow.sdk import DAG

from airflow_provider_ahachat.operators.ahachat import BroadcastBlockOperator

with DAG({dag_id!r}, schedule=None, default_args={{"retries": 0}}) as dag:
    BroadcastBlockOperator(
        task_id="send",
        ahachat_conn_id="aha",
        block_name="shipping_update",
        recipients={recipients!r},
        concurrency=8,
        rate_limit=150,
        ledger_path={ledger!r},
        progress_interval=0.5,{extra}
    )
"""


class Task:
    """One task of a DAG file in the DAGs folder, run by ``airflow tasks test`` in a child process."""

    def __init__(
        self,
        dag_id: str,
        sandbox: SandboxServer,
        ids: list[str],
        tmp_path: Path,
        *,
        extra: str = "",
        ledger: str | None = None,
    ) -> None:
        from airflow.configuration import conf

        audience = tmp_path / "audience.jsonl"
        audience.write_text(
            "".join(json.dumps({"user_id": uid, "order_id": f"DH{i}"}) + "\n" for i, uid in enumerate(ids))
        )
        self.ledger = tmp_path / "ledger"
        self.file = Path(conf.get("core", "dags_folder")) / f"{dag_id}.py"
        text = DAG_FILE.format(
            dag_id=dag_id, recipients=str(audience), ledger=ledger or str(self.ledger), extra=extra
        )
        self.file.write_text(text)  # last: a Task that failed to build leaves no DAG file behind
        # The same logical date both times: the second run is the same DAG run's task again, as
        # when Airflow retries it or someone clears it.
        self.command = [sys.executable, "-m", "airflow", "tasks", "test", dag_id, "send", "2026-11-22"]
        self.env = {**os.environ, f"AIRFLOW_CONN_{CONN.upper()}": sandbox.connection_uri}

    def start(self) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            env=self.env,
        )

    def run(self) -> str:
        return self.finish(self.start())

    @staticmethod
    def finish(process: subprocess.Popen[str]) -> str:
        return communicate_or_kill(process, 180)

    def report(self) -> list[dict[str, Any]]:
        (path,) = self.ledger.rglob("report.jsonl")
        return [json.loads(line) for line in path.read_text().splitlines()]

    def remove(self) -> None:
        self.file.unlink(missing_ok=True)


def communicate_or_kill(process: subprocess.Popen[str], timeout: float) -> str:
    """The process's output once it ends; if it does not end in time, kill its group, then raise."""
    try:
        out, _ = process.communicate(timeout=timeout)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        raise
    return out


def kill_part_way(
    process: subprocess.Popen[str], sandbox: SandboxServer, sig: signal.Signals, after: int
) -> None:
    deadline = time.monotonic() + 240  # `airflow tasks test` starts slowly on a busy machine
    try:
        while len(sandbox.outbox_counts()) < after:
            assert process.poll() is None, "the task ended before it could be killed"
            assert time.monotonic() < deadline, "the task never got going"
            time.sleep(0.02)
    except BaseException:
        # Nothing this test started may outlive it, to send to the next test's sandbox.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        raise
    os.killpg(process.pid, sig)


def users(lines: list[dict[str, Any]], **match: Any) -> set[str]:
    return {
        line["recipient"].removeprefix("user ")
        for line in lines
        if all(line.get(name) == value for name, value in match.items())
    }


def kill_with_requests_in_flight(task: Task, sandbox: SandboxServer, *, after: int, total: int) -> set[str]:
    """Start the task and SIGKILL it after ``after`` deliveries, requests in flight; who it reached."""
    # AhaChat takes 100 ms to answer, so requests are in flight when the process dies: the sandbox
    # still processes them, but the task never hears back.
    sandbox.configure(latency_ms=100)
    first = task.start()
    kill_part_way(first, sandbox, signal.SIGKILL, after=after)
    first.wait(timeout=30)
    assert first.returncode == -signal.SIGKILL
    time.sleep(0.5)  # the requests in flight land
    sandbox.configure(latency_ms=0)
    reached_first = set(sandbox.outbox_counts())
    assert after <= len(reached_first) < total
    return reached_first


def nobody_twice(
    sandbox: SandboxServer, lines: list[dict[str, Any]], log: str
) -> tuple[dict[str, int], set[str], set[str]]:
    """
    Check that the sandbox messaged nobody twice; return its counts by customer, and who the report
    ``lines`` say is ``unknown`` (claimed, never answered) and ``delivered``.
    """
    counts = sandbox.outbox_counts()
    assert max(counts.values()) == 1, log[-3000:]
    return counts, users(lines, outcome="unknown"), users(lines, outcome="delivered")
