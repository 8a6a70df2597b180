"""
The code the docs site shows, run: ``docs/examples/`` holds it, the pages include it by markers.

- the hook's script runs against the sandbox, and what the customer received is checked (the
  operators' DAG runs in ``tests/unit/test_operators.py``);
- the offline JSON API step calls a server standing for Airflow's, and the call is checked;
- the mapped SQL DAG runs on PostgreSQL in ``tests/integration/test_docs_examples_postgres.py``;
- the other DAGs (a file on object storage, the reader's PostgreSQL, approvals through another
  connection) are built: every argument is checked as Airflow and the operators check them when a
  DAG is parsed.
"""

from __future__ import annotations

import pytest
from helpers.paths import load_example
from helpers.recording_server import RecordingServer

from airflow_provider_ahachat.sandbox import SandboxServer

LAN = "3824547807572463"
MINH = "4102938475610293"


load = load_example


@pytest.mark.usefixtures("airflow_db")
@pytest.mark.parametrize(
    ("name", "tasks"),
    [
        ("howto_many_recipients", {"shipping_update", "loyal", "shipping_update_from_db"}),
        ("howto_sensor", {"wait_for_confirmation"}),
        ("howto_approvals", {"approve_refund", "approve_or_decline"}),
        ("howto_sql_mapped", {"slices", "shipping_update"}),
    ],
)
def test_the_example_dags_build(name: str, tasks: set[str]) -> None:
    dag = load(name)["dag"]
    assert set(dag.task_dict) >= tasks


@pytest.mark.usefixtures("airflow_db")
def test_the_alerts_example_puts_the_notifier_on_the_dag() -> None:
    from airflow_provider_ahachat.notifications.ahachat import AhaChatNotifier

    names = load("howto_alerts")
    callback = names["dag"].on_failure_callback
    assert isinstance(callback, AhaChatNotifier)
    assert callback.user_ids == ["6620193847561029"]
    assert isinstance(names["alert"], AhaChatNotifier)
    assert names["alert"].block_name == "ops_alert"


def test_the_hook_example_runs_on_the_sandbox(sandbox_connection: SandboxServer) -> None:
    sandbox = sandbox_connection

    load("howto_hook")

    (entry,) = sandbox.outbox(LAN)
    assert (entry["block_name"], entry["attributes"]) == ("shipping_update", {"order_id": "DH10231"})
    assert entry["message_tag"] is None  # no tag by default: Lan wrote 30 minutes ago
    lookups = [r for r in sandbox.request_log(limit=100) if r["method"] == "GET"]
    assert len(lookups) == 2  # find_user, then the generic call of the same path


@pytest.fixture
def airflow_stand_in(server: RecordingServer) -> RecordingServer:
    """The server standing for Airflow's (the shared recording server)."""
    return server


def test_the_offline_example_calls_the_webhook_as_the_bot_would(
    sandbox: SandboxServer, airflow_stand_in: RecordingServer
) -> None:
    load("howto_offline")["lan_sends_her_order_code"](sandbox, airflow_stand_in.url, "s3cret")

    (call,) = airflow_stand_in.requests
    assert (call.method, call.path) == ("POST", "/ahachat/webhooks/ahachat_sandbox/order_status")
    assert call.headers["X-AhaChat-Secret"] == "s3cret"
    assert call.json == {"messenger_user_id": LAN, "order_code": "DH10231"}
