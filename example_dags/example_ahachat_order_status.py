"""
When a customer asks the bot where their order is, look it up in the shop's database and answer.

In AhaChat, the block that asks for the order code ends with a "JSON API" step that calls Airflow:

- URL: ``https://airflow.example.com/ahachat/webhooks/ahachat_sandbox/order_status`` (POST)
- Header: ``X-AhaChat-Secret: <the connection's webhook_secret>``
- Body: ``{"messenger_user_id": "{{messenger_user_id}}", "order_code": "{{order_code}}"}``

Each call records an event on ``ahachat_event("order_status")`` and this DAG runs on it. Airflow
may fold several calls into one run, so every step works on all of the run's events:

- ``look_up_orders`` reads each event's customer and order code, finds the order in the shop's
  SQLite database (only that customer's own orders) and writes one answer per event; none is
  dropped, and the task fails if the count of answers differs from the count of events.
- ``reply`` (``SendTextMessageOperator``, mapped): one message per answer. The customer has just
  written to the bot, so Messenger's 24-hour window is open.
- ``tag_asked`` (``AddTagsOperator`` with ``recipients``): tags every customer of the run once,
  from :func:`~airflow_provider_ahachat.events.recipients_from_events`.

It talks to the connection ``ahachat_sandbox`` (the local sandbox, so that trying it messages
nobody) and reads the SQL connection ``shop_db``; set ``AHACHAT_CONN_ID`` and ``SHOP_DB_CONN_ID``
to use your own. The table is ``orders(order_id, messenger_user_id, status, eta, tracking_number)``.
"""

from __future__ import annotations

import os
from typing import Any

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_ahachat.events import ahachat_event, customer_events, recipients_from_events
from airflow_provider_ahachat.operators.ahachat import AddTagsOperator, SendTextMessageOperator

AHACHAT_CONN_ID = os.environ.get("AHACHAT_CONN_ID", "ahachat_sandbox")
SHOP_DB_CONN_ID = os.environ.get("SHOP_DB_CONN_ID", "shop_db")

ORDER_OF_CUSTOMER = """
SELECT order_id, status, eta, tracking_number
FROM orders
WHERE order_id = :order_id AND messenger_user_id = :user_id
"""

#: The order statuses as the customer reads them.
STATUS_TEXT = {
    "dang_xu_ly": "đang được chuẩn bị",
    "dang_giao": "đang được giao",
    "da_giao": "đã giao thành công",
    "da_huy": "đã bị hủy",
}


def answer_for(order: tuple[Any, ...] | None, order_code: str) -> str:
    """The text a customer gets about ``order_code``: its status, or how to find the right code."""
    if not order_code:
        return "Bạn gửi giúp shop mã đơn hàng (ví dụ DH10231) nhé."
    if order is None:
        return f"Shop chưa tìm thấy đơn {order_code} của bạn. Bạn kiểm tra lại mã đơn giúp shop nhé."
    order_id, status, eta, tracking = order
    text = f"Đơn {order_id} {STATUS_TEXT.get(status, status)}"
    if eta:
        text += f", dự kiến giao ngày {eta}"
    if tracking:
        text += f". Mã vận đơn: {tracking}"
    return text + "."


# [START howto_order_status_dag]
with DAG(
    dag_id="example_ahachat_order_status",
    description="Answer a customer who asks the bot about an order, from the shop's database",
    schedule=[ahachat_event("order_status", ahachat_conn_id=AHACHAT_CONN_ID)],
    start_date=pendulum.datetime(2026, 1, 1, tz="Asia/Ho_Chi_Minh"),
    catchup=False,
    default_args={"ahachat_conn_id": AHACHAT_CONN_ID, "retries": 0},
    tags=["ahachat", "example"],
) as dag:

    @task
    def look_up_orders(triggering_asset_events: Any = None) -> list[dict[str, str]]:
        """One answer per event of the run, in the order the customers wrote."""
        from airflow.sdk import BaseHook

        events = customer_events(triggering_asset_events, event="order_status")
        database = BaseHook.get_connection(SHOP_DB_CONN_ID).get_hook()
        answers = []
        for event in events:
            code = str(event["fields"].get("order_code") or "").strip().upper()
            user_id = event["messenger_user_id"]
            rows = database.get_records(ORDER_OF_CUSTOMER, parameters={"order_id": code, "user_id": user_id})
            answers.append({"user_id": user_id, "text": answer_for(rows[0] if rows else None, code)})
        if len(answers) != len(events):  # pragma: no cover - a guard for whoever edits this loop
            raise RuntimeError(f"{len(events)} events but {len(answers)} answers")
        print(f"{len(events)} question(s) in this run: " + ", ".join(a["user_id"] for a in answers))
        return answers

    @task
    def customers(triggering_asset_events: Any = None) -> list[dict[str, str]]:
        """Everyone who asked in this run, once each."""
        return recipients_from_events(triggering_asset_events, event="order_status")

    reply = SendTextMessageOperator.partial(task_id="reply").expand_kwargs(look_up_orders())
    tag_asked = AddTagsOperator(task_id="tag_asked", tags=["hoi_don_hang"], recipients=customers())
    reply >> tag_asked
# [END howto_order_status_dag]
