"""
Bulk sends under faults, inside Airflow: injected 503s and 429s, and a task killed part-way.

The kill tests run the task in a child process (``dag.test()`` through the test harness, with a
fixed logical date so that both runs are the same DAG run, as an Airflow retry or a cleared task
is), kill it while it sends, run it again, and count what the sandbox delivered.
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

import pytest

from airflow_provider_ahachat.sandbox import SandboxServer

CONN = "aha"
TESTS = Path(__file__).resolve().parent

pytestmark = pytest.mark.usefixtures("airflow_db")


@pytest.mark.slow
def test_injected_503s_and_429s_deliver_to_everyone_exactly_once(
    dag_runner: Any, sandbox: SandboxServer, tmp_path: Path
) -> None:
    from airflow.sdk import DAG

    from airflow_provider_ahachat.operators.ahachat import BroadcastBlockOperator

    ids = sandbox.generate_users(1000)
    rows = [{"user_id": uid, "order_id": f"DH{i}"} for i, uid in enumerate(ids)]
    sandbox.configure(error_rate=0.10, error_status=[503, 429], retry_after=0)
    with DAG("bulk_faults", schedule=None, default_args={"retries": 0}) as dag:
        BroadcastBlockOperator(
            task_id="send",
            ahachat_conn_id=CONN,
            block_name="shipping_update",
            recipients=rows,
            concurrency=16,
            rate_limit=0,
            ledger_path=str(tmp_path),
        )
    result = dag_runner(dag, {CONN: sandbox.connection_uri})
    assert result.succeeded, result.summary()

    stats = sandbox.stats()["by_status"]
    assert int(stats["503"]) > 30 and int(stats["429"]) > 30  # the faults did happen
    assert sandbox.outbox_counts() == dict.fromkeys(ids, 1)  # ... and nobody was lost or doubled
    summary = result.xcoms["send"]
    assert summary["outcomes"] == {"delivered": 1000}
    assert summary["retries"]["503"] == int(stats["503"]) and summary["retries"]["429"] == int(stats["429"])
    assert sandbox.user(ids[7])["attributes"]["order_id"] == "DH7"


def test_processed_500s_are_reported_unknown_not_resent(
    dag_runner: Any, sandbox: SandboxServer, tmp_path: Path
) -> None:
    from airflow.sdk import DAG

    from airflow_provider_ahachat.operators.ahachat import SendTextMessageOperator

    ids = sandbox.generate_users(200)
    sandbox.configure(error_rate=0.05, error_status=500, deliver_before_fail=True)
    with DAG("bulk_unknown", schedule=None, default_args={"retries": 0}) as dag:
        SendTextMessageOperator(
            task_id="send",
            ahachat_conn_id=CONN,
            text="Đơn hàng của bạn đã được giao.",
            recipients=ids,
            rate_limit=0,
            ledger_path=str(tmp_path),
            max_failure_ratio=0.2,
        )
    result = dag_runner(dag, {CONN: sandbox.connection_uri})
    assert result.succeeded, result.summary()
    unknown = int(sandbox.stats()["by_status"]["500"])
    assert unknown > 0
    summary = result.xcoms["send"]
    assert summary["outcomes"] == {"delivered": 200 - unknown, "unknown": unknown}
    assert sandbox.outbox_counts() == dict.fromkeys(ids, 1)  # the 500s were processed: each got one
    lines = [json.loads(line) for line in Path(summary["report"]).read_text().splitlines()]
    assert sum(1 for line in lines if line["outcome"] == "unknown") == unknown
    assert all("outcome is unknown" in line["reason"] for line in lines if line["outcome"] == "unknown")


# --------------------------------------------------------------------------- a task killed part-way

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


@pytest.mark.slow
def test_a_task_killed_outright_and_run_again_messages_nobody_twice(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    ids = sandbox.generate_users(600)
    task = Task("bulk_killed_outright", sandbox, ids, tmp_path)
    try:
        reached_first = kill_with_requests_in_flight(task, sandbox, after=150, total=600)
        log = task.run()
    finally:
        task.remove()
    counts = sandbox.outbox_counts()
    assert max(counts.values()) == 1, log[-3000:]  # nobody twice

    # Those in flight when the process died are "unknown": claimed, never answered. They are not
    # resent (a message may have gone out), and the report names each of them.
    lines = task.report()
    unknown, delivered = users(lines, outcome="unknown"), users(lines, outcome="delivered")
    assert 1 <= len(unknown) <= 8  # the requests in flight, at most concurrency=8
    assert unknown | delivered == set(ids) and not unknown & delivered
    assert delivered <= set(counts)  # everyone reported delivered got exactly one message
    assert set(counts) - delivered <= unknown  # any other delivery is one reported unknown
    assert users(lines, earlier_try=True, outcome="delivered") == reached_first - unknown
    # With no failure limit given, a person must decide about them: the task fails, naming them.
    assert f"{len(unknown)} unknown" in log and "an earlier try's outcome is unknown" in log


@pytest.mark.slow
def test_with_a_delivery_mark_a_task_killed_outright_loses_and_doubles_nobody(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    ids = sandbox.generate_users(600)
    mark = '\n        delivery_mark="airflow_delivery",'
    task = Task("bulk_killed_marked", sandbox, ids, tmp_path, extra=mark)
    try:
        reached_first = kill_with_requests_in_flight(task, sandbox, after=150, total=600)
        log = task.run()
    finally:
        task.remove()
    # Everyone got exactly one message: the killed try's unknown outcomes were settled by looking
    # for the mark, not by guessing.
    assert sandbox.outbox_counts() == dict.fromkeys(ids, 1), log[-3000:]
    lines = task.report()
    assert users(lines, outcome="delivered") == set(ids)
    confirmed = {
        line["recipient"].removeprefix("user ")
        for line in lines
        if "its airflow_delivery is on the customer" in (line.get("reason") or "")
    }
    assert 1 <= len(confirmed) <= 8 and confirmed <= reached_first  # those in flight at the kill
    assert users(lines, earlier_try=True, outcome="delivered") == reached_first


RETRYING_SCRIPT = """
from __future__ import annotations

import datetime
import json
import sys

sys.path.insert(0, {tests!r})

import airflow_harness
from airflow.sdk import DAG

from airflow_provider_ahachat.operators.ahachat import BroadcastBlockOperator

with DAG("bulk_stopped", schedule=None) as dag:
    BroadcastBlockOperator(
        task_id="send",
        ahachat_conn_id="aha",
        block_name="shipping_update",
        recipients={recipients!r},
        concurrency=8,
        rate_limit=150,
        ledger_path={ledger!r},
        retries=1,
        retry_delay=datetime.timedelta(0),
    )

result = airflow_harness.run_dag(dag, {{"aha": {uri!r}}}, echo=False)
print("RESULT " + json.dumps({{"states": result.task_states, "xcoms": result.xcoms}}, default=str))
print(result.log)
"""


@pytest.mark.slow
def test_a_task_stopped_by_airflow_is_retried_and_reaches_everyone_once(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    # Airflow stops a task (timed out, marked failed, worker shutdown) with SIGTERM, which calls
    # the operator's on_kill(): requests in flight finish and are recorded, nothing new starts.
    # Here Airflow then retries the task: the same DAG run, the same ledger.
    ids = sandbox.generate_users(600)
    audience = tmp_path / "audience.jsonl"
    audience.write_text("".join(json.dumps({"user_id": uid}) + "\n" for uid in ids))
    script = tmp_path / "retrying.py"
    script.write_text(
        RETRYING_SCRIPT.format(
            tests=str(TESTS),
            recipients=str(audience),
            ledger=str(tmp_path / "ledger"),
            uri=sandbox.connection_uri,
        )
    )
    process = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    kill_part_way(process, sandbox, signal.SIGTERM, after=150)
    out = communicate_or_kill(process, 180)
    (line,) = [line for line in out.splitlines() if line.startswith("RESULT ")]
    result = json.loads(line.removeprefix("RESULT "))

    assert "was stopped part-way" in out, out[-3000:]  # the first try stopped, and failed
    assert result["states"] == {"send": "success"}, out[-3000:]  # the retry succeeded
    summary = result["xcoms"]["send"]
    assert summary["outcomes"] == {"delivered": 600}
    assert 150 <= summary["delivered_in_earlier_tries"] < 600
    assert sandbox.outbox_counts() == dict.fromkeys(ids, 1)  # nobody missed, nobody twice
