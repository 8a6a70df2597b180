"""
End to end with real Airflow processes: ``airflow standalone`` on a free port with its own home,
the provider's plugin on its API server, the example DAG ``example_ahachat_order_status`` in its
DAGs folder, and the sandbox as AhaChat, whose block ``hoi_don_hang`` holds a JSON API step that
calls the webhook. Customers who reach the block become asset-triggered runs whose tasks see
their fields and answer each of them.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from airflow_processes import AirflowProcesses, wait_until

from airflow_provider_ahachat.sandbox import SandboxServer

pytestmark = [pytest.mark.airflow_processes, pytest.mark.timeout(2700)]

ROOT = Path(__file__).resolve().parent.parent
DAG_ID = "example_ahachat_order_status"
CONN_ID = "ahachat_sandbox"
SECRET = "e2e-secret-4d1f8a0b-keep-out-of-logs"
LAN, MINH = "3824547807572463", "4102938475610293"
RUN_TIMEOUT = 600.0


def shop_database(path: Path) -> Path:
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE orders (order_id TEXT PRIMARY KEY, messenger_user_id TEXT, status TEXT,"
            " eta TEXT, tracking_number TEXT)"
        )
        db.executemany(
            "INSERT INTO orders VALUES (?, ?, ?, ?, ?)",
            [
                ("DH10231", LAN, "dang_giao", "02/12", "GHN8123456VN"),
                ("DH10232", MINH, "dang_xu_ly", None, None),
            ],
        )
    return path


@pytest.fixture
def airflow(tmp_path: Path) -> Iterator[tuple[AirflowProcesses, SandboxServer]]:
    dags = tmp_path / "dags"
    dags.mkdir()
    shutil.copy(ROOT / "example_dags" / f"{DAG_ID}.py", dags)
    with SandboxServer() as sandbox:
        uri = sandbox.connection_uri
        conn_env = {
            f"AIRFLOW_CONN_{CONN_ID.upper()}": f"{uri}{'&' if '?' in uri else '?'}"
            + f"webhook_secret={SECRET}&webhook_replies=%C4%90ang+tra+c%E1%BB%A9u",
            "AIRFLOW_CONN_SHOP_DB": json.dumps(
                {"conn_type": "sqlite", "host": str(shop_database(tmp_path / "shop.db"))}
            ),
            "AHACHAT_CONN_ID": CONN_ID,
            "AIRFLOW__AHACHAT__LEDGER_PATH": str(tmp_path / "ledger"),
        }
        with AirflowProcesses(tmp_path / "home", dags_folder=dags, env=conn_env) as processes:
            processes.wait_for_dag(DAG_ID)
            yield processes, sandbox


def finished(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``runs`` if there are some and all of them are over, else nothing."""
    return runs if runs and all(r["state"] in ("success", "failed") for r in runs) else []


def ask(url: str, user_id: str, order_code: str, secret: str = SECRET) -> requests.Response:
    """A call as the bot's JSON API block makes it."""
    return requests.post(
        f"{url}/ahachat/webhooks/{CONN_ID}/order_status",
        json={"messenger_user_id": user_id, "order_code": order_code},
        headers={"X-AhaChat-Secret": secret},
        timeout=120,
    )


def test_signed_calls_run_the_dag_and_every_customer_gets_an_answer(
    airflow: tuple[AirflowProcesses, SandboxServer],
) -> None:
    processes, sandbox = airflow
    assert ask(processes.url, LAN, "DH10231", secret="wrong").status_code == 401
    sandbox.set_json_api(
        "hoi_don_hang",
        {
            "url": f"{processes.url}/ahachat/webhooks/{CONN_ID}/order_status",
            "headers": {"X-AhaChat-Secret": SECRET},
            "body": {"messenger_user_id": "{{messenger_user_id}}", "order_code": "{{order_code}}"},
            "timeout": 120,
        },
    )
    # Each customer types an order code (saved as an attribute) and reaches the block.
    for user_id, code in ((LAN, "dh10231"), (MINH, "DH10232"), (LAN, "DH999")):
        sandbox.update_user(user_id, attributes={"order_code": code})
        sandbox.update_user(user_id, run_block="hoi_don_hang")
    calls = sandbox.json_api_calls()
    assert [(c["status"], c["error"]) for c in calls] == [(200, None)] * 3, calls
    acks = [e for e in sandbox.outbox() if e["kind"] == "json_api"]
    assert [e["text"] for e in acks] == ["Đang tra cứu"] * 3

    def replies() -> list[dict[str, Any]]:
        return [e for e in sandbox.outbox() if e["kind"] == "text"]

    try:
        wait_until(lambda: len(replies()) >= 3, RUN_TIMEOUT, "three replies in the sandbox's outbox", 1.0)
        runs = wait_until(
            lambda: finished(processes.dag_runs(DAG_ID)), RUN_TIMEOUT, "the runs to finish", 1.0
        )
    except TimeoutError:
        print(processes.log_tail(20000))
        raise
    assert {r["run_type"] for r in runs} == {"asset_triggered"}
    assert {r["state"] for r in runs} == {"success"}, processes.log_tail(20000)

    texts = {(e["messenger_user_id"], e["text"]) for e in replies()}
    assert texts == {
        (LAN, "Đơn DH10231 đang được giao, dự kiến giao ngày 02/12. Mã vận đơn: GHN8123456VN."),
        (MINH, "Đơn DH10232 đang được chuẩn bị."),
        (LAN, "Shop chưa tìm thấy đơn DH999 của bạn. Bạn kiểm tra lại mã đơn giúp shop nhé."),
    }
    assert len(replies()) == 3
    for user_id in (LAN, MINH):
        assert "hoi_don_hang" in sandbox.user(user_id)["tags"]

    logs = "".join(p.read_text(errors="replace") for p in (processes.home / "logs").rglob("*.log"))
    assert SECRET not in logs + processes.log_tail(10**9)
