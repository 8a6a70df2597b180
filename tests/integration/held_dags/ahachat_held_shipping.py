"""
DAGs of the held-messages test on real Airflow processes (tests/integration/test_held_airflow.py).

``held_shipping`` tells three customers their order shipped, then asks whether it arrived (the
block ``confirm_delivery``), then sends one of them a promotion that expires within a second: Lan
wrote 30 minutes ago and gets them now; Bảo and Hùng, outside the 24-hour window, get them held.
``held_order_status`` is scheduled on the bot's ``order_status`` calls, and ``held_followup`` on
``held_delivered``, the event each delivery of held messages records.
"""

from __future__ import annotations

import os
from typing import Any

from airflow.sdk import DAG, task

from airflow_provider_ahachat.events import ahachat_event, customer_events
from airflow_provider_ahachat.operators.ahachat import BroadcastBlockOperator, SendTextMessageOperator

CONN_ID = os.environ.get("AHACHAT_CONN_ID", "ahachat_default")
LAN, BAO, HUNG = "3824547807572463", "5310298476123984", "2958174603928174"
EVERYONE = [LAN, BAO, HUNG]
COMMON: dict[str, Any] = {"ahachat_conn_id": CONN_ID, "outside_window": "hold", "rate_limit": 0}

with DAG("held_shipping", schedule=None, catchup=False, default_args={"retries": 0}):
    shipped = SendTextMessageOperator(
        task_id="shipped",
        text="Đơn DH10231 đã gửi, mã vận đơn GHN8123456VN",
        recipients=EVERYONE,
        **COMMON,
    )
    ask = BroadcastBlockOperator(
        task_id="ask_received",
        block_name="confirm_delivery",
        attributes={"order_id": "DH10231"},
        recipients=EVERYONE,
        **COMMON,
    )
    promo = SendTextMessageOperator(
        task_id="promo", text="Giảm 10% hôm nay", recipients=[BAO], hold_for=1, **COMMON
    )
    shipped >> ask >> promo

with DAG("held_order_status", schedule=[ahachat_event("order_status", CONN_ID)], catchup=False):

    @task
    def noted(**context: Any) -> list[str]:
        events = customer_events(context["triggering_asset_events"], event="order_status")
        return [e["messenger_user_id"] for e in events]

    noted()

with DAG("held_followup", schedule=[ahachat_event("held_delivered", CONN_ID)], catchup=False):

    @task
    def delivered(**context: Any) -> list[list[Any]]:
        events = customer_events(context["triggering_asset_events"], event="held_delivered")
        return [[e["messenger_user_id"], len(e["fields"]["messages"])] for e in events]

    delivered()
