"""
Tell customers their order shipped, even those who last wrote days ago: what Messenger will not let
the bot send now waits for them, and reaches them the moment they next talk to the bot.

Since April 2026 a page may message a customer only within 24 hours of their last message or tap.
``outside_window="hold"`` turns that wall into a queue: the update goes now to the customers inside
the window; for the others it is held (``hold_for``, here 3 days), and shown in the answer to
their next call of the bot's JSON API block, after that block's own acknowledgement. In AhaChat,
point a JSON API step of the blocks customers come back through (the welcome block, the default
answer, "where is my order?") at Airflow:

- ``POST https://airflow.example.com/ahachat/webhooks/ahachat_sandbox/_held`` (delivers held
  messages only; needs no DAG), or any event of the connection, such as ``.../order_status``;
- header ``X-AhaChat-Secret: <the connection's webhook_secret>``;
- body ``{"messenger_user_id": "{{messenger_user_id}}"}``.

- ``notify_shipped`` sends the update to ``params.customers``; its summary counts ``delivered``
  and ``held``.
- ``example_ahachat_held_followup`` runs on each delivery of held messages
  (``ahachat_event("held_delivered")``) and tags those customers, so that nobody is chased twice.

It talks to the connection ``ahachat_sandbox`` (the local sandbox, so that trying it messages
nobody); set ``AHACHAT_CONN_ID`` to use your own.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_provider_ahachat.events import ahachat_event, recipients_from_events
from airflow_provider_ahachat.operators.ahachat import AddTagsOperator, SendTextMessageOperator

AHACHAT_CONN_ID = os.environ.get("AHACHAT_CONN_ID", "ahachat_sandbox")

with DAG(
    dag_id="example_ahachat_held_shipping",
    description="A shipping update now inside Messenger's window, held until the customer writes outside it",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="Asia/Ho_Chi_Minh"),
    catchup=False,
    params={
        "customers": Param(["3824547807572463", "5281407936251407"], type="array"),
        "order_id": Param("DH10240", type="string"),
        "tracking_number": Param("GHN8123499VN", type="string"),
    },
    default_args={"ahachat_conn_id": AHACHAT_CONN_ID, "retries": 0},
    # params.customers reaches recipients= as a list, not as its text.
    render_template_as_native_obj=True,
    tags=["ahachat", "example"],
) as dag:
    # [START howto_hold]
    SendTextMessageOperator(
        task_id="notify_shipped",
        text="Đơn {{ params.order_id }} của bạn đã được gửi đi, mã vận đơn {{ params.tracking_number }}.",
        recipients="{{ params.customers }}",
        outside_window="hold",
        hold_for=datetime.timedelta(days=3),
    )
    # [END howto_hold]

with DAG(
    dag_id="example_ahachat_held_followup",
    description="Tag the customers who just got their held messages",
    schedule=[ahachat_event("held_delivered", ahachat_conn_id=AHACHAT_CONN_ID)],
    start_date=pendulum.datetime(2026, 1, 1, tz="Asia/Ho_Chi_Minh"),
    catchup=False,
    default_args={"ahachat_conn_id": AHACHAT_CONN_ID, "retries": 0},
    tags=["ahachat", "example"],
):
    # [START howto_held_followup]
    @task
    def reached(triggering_asset_events: Any = None) -> list[dict[str, str]]:
        """The customers whose held messages were just delivered, once each."""
        return recipients_from_events(triggering_asset_events, event="held_delivered")

    AddTagsOperator(task_id="tag_reached", tags=["da_nhan_cap_nhat"], recipients=reached())
    # [END howto_held_followup]
