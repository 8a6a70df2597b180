"""
Bulk sends under faults, inside Airflow: injected 503s and 429s. A task killed part-way, in
Airflow's own processes: ``tests/integration/test_bulk_kills.py``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers.dag_helpers import CONN, new_dag

from airflow_provider_ahachat.sandbox import SandboxServer

TESTS = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("airflow_db")


RunSend = Callable[..., Any]


@pytest.fixture
def run_send(dag_runner: Any, sandbox: SandboxServer, tmp_path: Path) -> RunSend:
    """Runs one task ``send`` at full speed (no rate limit), its ledger in the test's folder.

    Its arguments: the DAG's ID, the operator class and the operator's own arguments (what to send,
    to whom).
    """

    def _run(dag_id: str, operator: Any, **arguments: Any) -> Any:
        with new_dag(dag_id) as dag:
            operator(task_id="send", rate_limit=0, ledger_path=str(tmp_path), **arguments)
        return dag_runner(dag, {CONN: sandbox.connection_uri})

    return _run


@pytest.mark.slow
def test_injected_503s_and_429s_deliver_to_everyone_exactly_once(
    run_send: RunSend, sandbox: SandboxServer
) -> None:
    from airflow_provider_ahachat.operators.ahachat import BroadcastBlockOperator

    ids = sandbox.generate_users(1000)
    rows = [{"user_id": uid, "order_id": f"DH{i}"} for i, uid in enumerate(ids)]
    sandbox.configure(error_rate=0.10, error_status=[503, 429], retry_after=0)
    result = run_send(
        "bulk_faults", BroadcastBlockOperator, block_name="shipping_update", recipients=rows, concurrency=16
    )
    assert result.succeeded, result.summary()

    stats = sandbox.stats()["by_status"]
    assert int(stats["503"]) > 30 and int(stats["429"]) > 30  # the faults did happen
    assert sandbox.outbox_counts() == dict.fromkeys(ids, 1)  # ... and nobody was lost or doubled
    summary = result.xcoms["send"]
    assert summary["outcomes"] == {"delivered": 1000}
    assert summary["retries"]["503"] == int(stats["503"]) and summary["retries"]["429"] == int(stats["429"])
    assert sandbox.user(ids[7])["attributes"]["order_id"] == "DH7"


def test_processed_500s_are_reported_unknown_not_resent(run_send: RunSend, sandbox: SandboxServer) -> None:
    from airflow_provider_ahachat.operators.ahachat import SendTextMessageOperator

    ids = sandbox.generate_users(200)
    sandbox.configure(error_rate=0.05, error_status=500, deliver_before_fail=True)
    result = run_send(
        "bulk_unknown",
        SendTextMessageOperator,
        text="Đơn hàng của bạn đã được giao.",
        recipients=ids,
        max_failure_ratio=0.2,
    )
    assert result.succeeded, result.summary()
    unknown = int(sandbox.stats()["by_status"]["500"])
    assert unknown > 0
    summary = result.xcoms["send"]
    assert summary["outcomes"] == {"delivered": 200 - unknown, "unknown": unknown}
    assert sandbox.outbox_counts() == dict.fromkeys(ids, 1)  # the 500s were processed: each got one
    lines = [json.loads(line) for line in Path(summary["report"]).read_text().splitlines()]
    assert sum(1 for line in lines if line["outcome"] == "unknown") == unknown
    assert all("outcome is unknown" in line["reason"] for line in lines if line["outcome"] == "unknown")
