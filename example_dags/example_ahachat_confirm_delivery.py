"""
Ask a customer to confirm delivery, wait for the answer without holding a worker, then tag them.

- ``BroadcastBlockOperator`` starts the ``confirm_delivery`` block ("did you receive order
  DH10231?", with the quick replies "Đã nhận" and "Chưa nhận"). It carries no message tag (Meta
  retired ``POST_PURCHASE_UPDATE`` on 27 April 2026), so Messenger delivers it only to a customer
  who wrote to the bot or tapped one of its buttons in the last 24 hours; with
  ``outside_window="skip"`` the run skips the rest for a customer outside the window instead of
  failing. It also sets ``delivery_confirmed`` to ``pending``, so that an answer to an earlier
  order does not count.
- ``UserSensor(deferrable=True)`` waits, in the triggerer, until the customer taps "Đã nhận": the
  block ``delivery_received`` sets ``delivery_confirmed=yes``. It checks every 5 minutes and gives
  up after 3 days.
- ``AddTagsOperator`` and ``RemoveTagsOperator`` then mark the order as received.
- If anything fails, ``AhaChatNotifier`` tells the shop's staff in Messenger. A text reaches only
  people who wrote to the bot in the last 24 hours, so the staff member keeps a chat with the bot open.

It talks to the connection ``ahachat_sandbox``: the local sandbox, so that trying it messages nobody.
To run it against your bot, set ``AHACHAT_CONN_ID`` to your own ``ahachat`` connection's ID.
``AHACHAT_POKE_INTERVAL`` (seconds) changes the 5 minutes between checks, as the demo does.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.sdk import DAG

from airflow_provider_ahachat.notifications.ahachat import send_ahachat_notification
from airflow_provider_ahachat.operators.ahachat import (
    AddTagsOperator,
    BroadcastBlockOperator,
    RemoveTagsOperator,
)
from airflow_provider_ahachat.sensors.ahachat import UserSensor

AHACHAT_CONN_ID = os.environ.get("AHACHAT_CONN_ID", "ahachat_sandbox")
POKE_INTERVAL = timedelta(seconds=float(os.environ.get("AHACHAT_POKE_INTERVAL", "300")))

with DAG(
    dag_id="example_ahachat_confirm_delivery",
    description="Ask a customer to confirm delivery, wait for the answer, then tag them",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="Asia/Ho_Chi_Minh"),
    catchup=False,
    default_args={"ahachat_conn_id": AHACHAT_CONN_ID},
    params={
        "customer_id": "3824547807572463",  # Nguyễn Thị Lan
        "order_id": "DH10231",
        "staff_id": "6620193847561029",  # who hears about failures
    },
    on_failure_callback=send_ahachat_notification(
        ahachat_conn_id=AHACHAT_CONN_ID,
        user_ids="{{ params.staff_id }}",
        text="Airflow: {{ dag.dag_id }} failed for order {{ params.order_id }} (run {{ run_id }}, "
        "task {{ ti.task_id }}). {{ reason }}",
    ),
    tags=["ahachat", "example"],
) as dag:
    ask = BroadcastBlockOperator(
        task_id="ask_to_confirm",
        user_id="{{ params.customer_id }}",
        block_name="confirm_delivery",
        attributes={"order_id": "{{ params.order_id }}", "delivery_confirmed": "pending"},
        outside_window="skip",  # nobody to wait for: the sensor and the tags are skipped too
    )

    wait = UserSensor(
        task_id="wait_for_confirmation",
        user_id="{{ params.customer_id }}",
        attributes={"delivery_confirmed": "yes"},
        deferrable=True,
        poke_interval=POKE_INTERVAL,
        timeout=timedelta(days=3),
    )

    received = AddTagsOperator(
        task_id="tag_received", user_id="{{ params.customer_id }}", tags=["da_nhan_hang"]
    )
    untag = RemoveTagsOperator(
        task_id="untag_waiting", user_id="{{ params.customer_id }}", tags=["cho_giao_hang"]
    )

    ask >> wait >> [received, untag]
