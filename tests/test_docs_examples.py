"""
The code the docs site shows, run: ``docs/examples/`` holds it, the pages include it by markers.

- the operators' DAG and the hook's script run against the sandbox, and what the customers received
  is checked;
- the mapped SQL DAG runs with ``dag.test()`` on a PostgreSQL database shaped as it expects;
- the offline JSON API step calls a server standing for Airflow's, and the call is checked;
- the other DAGs (a file on object storage, the reader's PostgreSQL, approvals through another
  connection) are built: every argument is checked as Airflow and the operators check them when a
  DAG is parsed.
"""

from __future__ import annotations

import datetime
import runpy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from recording_server import RecordingServer

from airflow_provider_ahachat.sandbox import SandboxServer

pytest_plugins = ["postgres_fixtures"]

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"
LAN = "3824547807572463"
MINH = "4102938475610293"


def load(name: str) -> dict[str, Any]:
    """Run one example file as a module and return its names."""
    return runpy.run_path(str(EXAMPLES / f"{name}.py"), run_name=f"docs_example_{name}")


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
    dag = load("howto_operators")["dag"]

    result = dag_runner(dag, {"ahachat_default": sandbox.connection_uri})

    assert result.succeeded, result.summary()
    lan = sandbox.user(LAN)
    assert {"vip", "da_mua_hang"} <= set(lan["tags"])
    assert "cho_giao_hang" not in lan["tags"]
    assert lan["attributes"]["s_d_t"] == "0908071111"
    assert "codeso" not in lan["attributes"]
    assert lan["attributes"]["size_asked"] == "yes"
    kinds = [e["kind"] for e in sandbox.outbox(LAN)]
    assert kinds == ["text", "dynamic"]
    assert sandbox.outbox(LAN)[0]["text"] == "Chào Lan!"
    (shipped,) = sandbox.outbox(MINH)
    assert (shipped["block_name"], shipped["attributes"]["order_id"]) == ("shipping_update", "DH10232")
    assert sandbox.token not in result.log


def test_the_hook_example_runs_on_the_sandbox(sandbox_connection: SandboxServer) -> None:
    sandbox = sandbox_connection

    load("howto_hook")

    (entry,) = sandbox.outbox(LAN)
    assert (entry["block_name"], entry["attributes"]) == ("shipping_update", {"order_id": "DH10231"})
    assert entry["message_tag"] is None  # no tag by default: Lan wrote 30 minutes ago
    lookups = [r for r in sandbox.request_log(limit=100) if r["method"] == "GET"]
    assert len(lookups) == 2  # find_user, then the generic call of the same path


@pytest.fixture
def airflow_stand_in() -> Iterator[RecordingServer]:
    server = RecordingServer().start()
    try:
        yield server
    finally:
        server.stop()


def test_the_offline_example_calls_the_webhook_as_the_bot_would(
    sandbox: SandboxServer, airflow_stand_in: RecordingServer
) -> None:
    load("howto_offline")["lan_sends_her_order_code"](sandbox, airflow_stand_in.url, "s3cret")

    (call,) = airflow_stand_in.requests
    assert (call.method, call.path) == ("POST", "/ahachat/webhooks/ahachat_sandbox/order_status")
    assert call.headers["X-AhaChat-Secret"] == "s3cret"
    assert call.json == {"messenger_user_id": LAN, "order_code": "DH10231"}


@pytest.mark.slow
@pytest.mark.usefixtures("airflow_db")
def test_the_mapped_example_runs_on_postgres(
    dag_runner: Any,
    sandbox: SandboxServer,
    postgres: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Eight slices of a PostgreSQL query, each customer messaged once."""
    from airflow.models.pool import Pool

    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))  # the ledger, by default under it
    Pool.create_or_update_pool("ahachat", 4, "for the docs' example", include_deferred=False)
    ids = sandbox.generate_users(20)
    database = postgres.new_database()
    conn = postgres.connect(database)
    with conn, conn.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE orders (customer_id INTEGER, messenger_user_id TEXT, tracking_number TEXT, "
            "shipped_on DATE)"
        )
        for n, uid in enumerate(ids):
            shipped = "2026-11-11" if n < 16 else "2026-11-10"
            cursor.execute("INSERT INTO orders VALUES (%s, %s, %s, %s)", (n, uid, f"GHN{n}", shipped))
    conn.close()
    dag = load("howto_sql_mapped")["dag"]

    day = datetime.datetime(2026, 11, 11, tzinfo=datetime.timezone.utc)
    result = dag_runner(
        dag,
        {"ahachat_default": sandbox.connection_uri, "shop_postgres": postgres.uri(database)},
        logical_date=day,
    )

    assert result.succeeded, result.summary()
    assert sandbox.outbox_counts() == dict.fromkeys(ids[:16], 1)
    for n, uid in enumerate(ids[:16]):
        assert sandbox.outbox(uid)[0]["attributes"] == {"tracking_number": f"GHN{n}"}
    assert sandbox.token not in result.log
