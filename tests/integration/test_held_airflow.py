"""
Held until the customer writes, end to end with real Airflow processes: ``airflow standalone``
(API server with two workers, scheduler, DAG processor, triggerer) with the provider's plugin, the
DAGs of ``tests/integration/held_dags`` and the sandbox as AhaChat in its 2026 mode.

A run sends to the customer inside the 24-hour window and holds for those outside; each held
message reaches its customer once, in order, when they next reach the bot's JSON API block (an
event of the connection, or the ``_held`` route); the message that expired never does; nobody gets
another's; and each delivery is an asset event a DAG runs on.
"""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest
import requests
from helpers.airflow_processes import AirflowProcesses, wait_until
from helpers.approval_helpers import trigger

from airflow_provider_ahachat.events import event_uri
from airflow_provider_ahachat.sandbox import SandboxServer

pytestmark = [pytest.mark.airflow_processes, pytest.mark.timeout(2700)]

ROOT = Path(__file__).resolve().parents[2]
CONN_ID = "ahachat_sandbox"
SECRET = "held-e2e-secret-7c2b99-keep-out"
LAN, BAO, HUNG = "3824547807572463", "5310298476123984", "2958174603928174"
SHIPPED = "Đơn DH10231 đã gửi, mã vận đơn GHN8123456VN"
ACK = "Đang tra cứu"
RUN_TIMEOUT = 600.0


def wait_for_run(airflow: AirflowProcesses, dag_id: str, run_id: str) -> dict[str, Any]:
    def over() -> dict[str, Any] | None:
        run = airflow.get_json(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
        return run if run and run.get("state") in ("success", "failed") else None

    run: dict[str, Any] = wait_until(over, RUN_TIMEOUT, f"the run {run_id} of {dag_id} to end", 1.0)
    return run


def xcom(airflow: AirflowProcesses, dag_id: str, run_id: str, task_id: str) -> Any:
    entry = airflow.get_json(
        f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value"
    )
    value = (entry or {}).get("value")
    return json.loads(value) if isinstance(value, str) else value


def shown(sandbox: SandboxServer, user_id: str, since: int) -> list[dict[str, Any]]:
    """What the customer saw from the bot's JSON API answers since ``since``: texts and blocks run."""
    return [
        {"texts": [m.get("text") for m in e["messages"]], "blocks": e["blocks"]}
        for e in sandbox.outbox(user_id, since=since)
        if e["kind"] == "json_api"
    ]


def step(url: str, route: str) -> dict[str, Any]:
    return {
        "url": f"{url}/ahachat/webhooks/{CONN_ID}/{route}",
        "headers": {"X-AhaChat-Secret": SECRET},
        "body": {"messenger_user_id": "{{messenger_user_id}}"},
        "timeout": 120,
    }


def test_a_run_holds_for_customers_outside_the_window_and_each_gets_them_once_at_their_next_call(
    tmp_path: Path,
) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    shutil.copy(ROOT / "tests" / "integration" / "held_dags" / "ahachat_held_shipping.py", dags)
    with SandboxServer() as sandbox:
        uri = sandbox.connection_uri
        env = {
            f"AIRFLOW_CONN_{CONN_ID.upper()}": f"{uri}{'&' if '?' in uri else '?'}"
            + f"webhook_secret={SECRET}&webhook_replies=%C4%90ang+tra+c%E1%BB%A9u",
            "AHACHAT_CONN_ID": CONN_ID,
            "AIRFLOW__API__WORKERS": "2",
        }
        with AirflowProcesses(tmp_path / "home", dags_folder=dags, env=env, start_timeout=1500) as airflow:
            airflow.wait_for_dag("held_shipping")
            airflow.wait_for_asset_consumer(event_uri("order_status", CONN_ID), "held_order_status")
            airflow.wait_for_asset_consumer(event_uri("held_delivered", CONN_ID), "held_followup")
            store = airflow.home / "ahachat" / "held.sqlite3"
            sandbox.set_json_api("hoi_don_hang", step(airflow.url, "order_status"))
            sandbox.set_json_api("chao_lai", step(airflow.url, "_held"))

            # Before anything was held, a call answers its acknowledgement and creates no store.
            sandbox.update_user(LAN, run_block="hoi_don_hang")
            assert shown(sandbox, LAN, 0) == [{"texts": [ACK], "blocks": []}]
            assert not store.exists()

            run_id = trigger(airflow, "held_shipping")
            assert wait_for_run(airflow, "held_shipping", run_id)["state"] == "success", airflow.asset_report(
                "held_shipping", event_uri("order_status", CONN_ID)
            )
            for task_id in ("shipped", "ask_received"):
                summary = xcom(airflow, "held_shipping", run_id, task_id)
                assert summary["outcomes"] == {"delivered": 1, "held": 2}, summary
                assert summary["held"] == 2
            assert xcom(airflow, "held_shipping", run_id, "promo")["outcomes"] == {"held": 1}
            reached = [e for e in sandbox.outbox() if e["kind"] in ("dynamic", "block")]
            assert {e["messenger_user_id"] for e in reached} == {LAN}  # the others were refused
            since = max(e["seq"] for e in sandbox.outbox())

            # Bảo asks the bot about his order: an event of the connection carries his messages.
            sandbox.update_user(BAO, run_block="hoi_don_hang")
            sandbox.update_user(BAO, run_block="hoi_don_hang")
            bao = shown(sandbox, BAO, since)
            assert bao[0]["texts"][:2] == [ACK, SHIPPED]  # in order: the acknowledgement, the update
            assert bao[0]["blocks"] == ["confirm_delivery"]  # then the block, with its order ID set
            assert any("DH10231" in (text or "") for text in bao[0]["texts"][2:])
            assert bao[1:] == [{"texts": [ACK], "blocks": []}]  # once; the expired promotion never
            assert "Giảm 10%" not in json.dumps(sandbox.outbox(BAO), ensure_ascii=False)

            # Hùng comes back through the welcome block's _held call, twice at the same moment,
            # through two API server workers: one answer carries his messages, the other nothing.
            answers: list[requests.Response] = []
            barrier = threading.Barrier(2)

            def call() -> None:
                barrier.wait()
                answers.append(
                    requests.post(
                        f"{airflow.url}/ahachat/webhooks/{CONN_ID}/_held",
                        json={"messenger_user_id": HUNG},
                        headers={"X-AhaChat-Secret": SECRET},
                        timeout=120,
                    )
                )

            threads = [threading.Thread(target=call) for _ in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            bodies = sorted((a.json() for a in answers), key=len)
            assert [a.status_code for a in answers] == [200, 200]
            assert bodies[0] == {}
            assert [m["text"] for m in bodies[1]["messages"]][:1] == [SHIPPED]
            assert bodies[1]["redirect_to_blocks"] == ["confirm_delivery"]
            sandbox.update_user(HUNG, run_block="chao_lai")
            assert shown(sandbox, HUNG, since) == []  # nothing left: {} shows nothing
            sandbox.update_user(LAN, run_block="chao_lai")
            assert shown(sandbox, LAN, since) == []  # Lan never gets theirs

            # Each delivery is an event of held_delivered, on which a DAG ran.
            def followed() -> list[Any]:
                runs = [r for r in airflow.dag_runs("held_followup") if r["state"] == "success"]
                found = [
                    pair
                    for r in runs
                    for pair in xcom(airflow, "held_followup", r["dag_run_id"], "delivered") or []
                ]
                return found if len(found) >= 2 else []

            pairs = wait_until(followed, RUN_TIMEOUT, "two follow-up runs", 1.0)
            assert sorted(map(tuple, pairs)) == sorted([(BAO, 2), (HUNG, 2)])
            logs = "".join(p.read_text(errors="replace") for p in (airflow.home / "logs").rglob("*.log"))
            assert SECRET not in logs + airflow.log_tail(10**9)
