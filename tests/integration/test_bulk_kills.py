"""
Bulk sends when a task is killed part-way: the task runs in a child process (``airflow tasks test``,
or ``dag.test()`` through the test harness, with a fixed logical date so that both runs are the same
DAG run, as an Airflow retry or a cleared task is), is killed while it sends, runs again, and what
the sandbox delivered is counted.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.killed_task import (
    DAG_FILE,
    Task,
    communicate_or_kill,
    kill_part_way,
    kill_with_requests_in_flight,
    nobody_twice,
    users,
)

from airflow_provider_ahachat.sandbox import SandboxServer

CONN = "aha"
TESTS = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("airflow_db")


# --------------------------------------------------------------------------- a task killed part-way


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
    # Those in flight when the process died are "unknown": claimed, never answered. They are not
    # resent (a message may have gone out), and the report names each of them.
    lines = task.report()
    counts, unknown, delivered = nobody_twice(sandbox, lines, log)
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


#: ``dag.test()`` of the DAG of :data:`DAG_FILE`, the task retried once, at once, in a child process.
RETRYING_SCRIPT = """{dag}
import json
import sys

sys.path.insert(0, {tests!r})

from helpers import airflow_harness

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
            dag=DAG_FILE.format(
                dag_id="bulk_stopped",
                recipients=str(audience),
                ledger=str(tmp_path / "ledger"),
                extra="\n        retries=1,\n        retry_delay=0,",
            ),
            tests=str(TESTS),
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
