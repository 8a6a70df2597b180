"""
The code the docs site shows, run: ``docs/examples/`` holds it, the pages include it by markers.

- the operators' DAG and the hook's script run against the sandbox, and what the customers received
  is checked;
- the offline JSON API step calls a server standing for Airflow's, and the call is checked;
- the mapped SQL DAG runs on PostgreSQL in ``tests/integration/test_docs_examples_postgres.py``;
- the other DAGs (a file on object storage, the reader's PostgreSQL, approvals through another
  connection) are built: every argument is checked as Airflow and the operators check them when a
  DAG is parsed.
"""

from __future__ import annotations

from typing import Any

import pytest
from helpers.dag_helpers import run_without_token
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


@pytest.mark.usefixtures("airflow_db")
def test_the_operators_example_runs_on_the_sandbox(dag_runner: Any, sandbox: SandboxServer) -> None:
    """A customer found, then tagged and messaged, and another sent a block: every operator."""
    dag = load_example("howto_operators")["dag"]

    result = run_without_token(dag_runner, dag, sandbox, {"ahachat_default": sandbox.connection_uri})

    assert result.succeeded, result.summary()
    user = result.xcoms["find"]
    assert user["messenger_user_id"] == LAN and isinstance(user["messenger_user_id"], str)
    assert (user["first_name"], user["phone"]) == ("Lan", "+84908071111")
    tagged = result.xcoms["tag"]
    assert (tagged["action"], tagged["user_id"], tagged["phone"]) == ("add_tags", LAN, None)
    # AhaChat's answer, as the sandbox gives it: the user with the tags just added.
    assert tagged["data"]["messenger_user_id"] == LAN
    assert {"vip", "da_mua_hang"} <= set(tagged["data"]["tags"])

    lan = sandbox.user(LAN)
    assert set(lan["tags"]) == {"khach_quen", "vip", "da_mua_hang"}  # cho_giao_hang removed
    assert lan["attributes"]["s_d_t"] == "0908071111" and "codeso" not in lan["attributes"]
    assert lan["attributes"]["size_asked"] == "yes"  # set by the dynamic message
    assert [e["kind"] for e in sandbox.outbox(LAN)] == ["text", "dynamic"]
    assert sandbox.outbox(LAN)[0]["text"] == "Chào Lan!"  # the template, rendered from find's XCom

    (shipped,) = sandbox.outbox(MINH)  # by phone
    assert (shipped["block_name"], shipped["attributes"]["order_id"]) == ("shipping_update", "DH10232")
    assert sandbox.user(MINH)["attributes"]["tracking_number"] == "GHN8123457VN"
    assert shipped["message_tag"] is None  # no tag by default: a standard message
    broadcasts = [r for r in sandbox.request_log(limit=1000) if r["path"].endswith("/phones/send")]
    assert len(broadcasts) == 1 and "ahachat_message_tag" not in broadcasts[0]["query"]


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
