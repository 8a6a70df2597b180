"""
Every morning, tell the customers whose orders shipped yesterday, and look after one VIP customer.

The DAG uses all eight AhaChat operators:

- ``AddAttributesOperator`` with ``recipients``: saves each order and its tracking number on its
  customer (found by phone), so that the bot can show them whenever the customer next writes.
- ``BroadcastBlockOperator`` with the same ``recipients``: starts the ``shipping_update`` block for
  each of them, without a message tag. Since Meta retired ``POST_PURCHASE_UPDATE`` on 27 April 2026,
  Messenger delivers it only to customers who wrote to the bot (or tapped one of its buttons) in
  the last 24 hours; the others are reported as ``outside_window`` (in the task's summary line, its
  XCom and its report) and the task succeeds. Here Bảo, who last wrote 3 days ago, is one.
- ``FindUserOperator`` looks a customer up by phone; the others act on the ``messenger_user_id`` it
  returns: ``AddAttributesOperator``, ``AddTagsOperator``, ``RemoveTagsOperator``,
  ``ResetAttributesOperator``, ``SendTextMessageOperator`` and ``SendDynamicMessageOperator`` (the
  last two only reach people who wrote to the bot in the last 24 hours).

It talks to the connection ``ahachat_sandbox``: the local sandbox, so that trying it messages nobody.
To run it against your bot, set ``AHACHAT_CONN_ID`` to your own ``ahachat`` connection's ID.
"""

from __future__ import annotations

import os
from typing import Any

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_ahachat.operators.ahachat import (
    AddAttributesOperator,
    AddTagsOperator,
    BroadcastBlockOperator,
    FindUserOperator,
    RemoveTagsOperator,
    ResetAttributesOperator,
    SendDynamicMessageOperator,
    SendTextMessageOperator,
)

AHACHAT_CONN_ID = os.environ.get("AHACHAT_CONN_ID", "ahachat_sandbox")

with DAG(
    dag_id="example_ahachat_shipping_update",
    description="Tell customers their order shipped, then look after a VIP customer",
    schedule="0 8 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="Asia/Ho_Chi_Minh"),
    catchup=False,
    default_args={"ahachat_conn_id": AHACHAT_CONN_ID},
    params={"vip_phone": "+84 908 071 111"},
    tags=["ahachat", "example"],
) as dag:

    @task
    def orders_shipped_yesterday() -> list[dict[str, Any]]:
        """One row per order. In production this is a query on your warehouse."""
        orders = [
            ("+84 908 071 111", "DH10231", "GHN8123456VN"),
            ("0912.345.678", "DH10232", "GHN8123457VN"),
            ("0903-456-789", "DH10233", "GHN8123458VN"),  # last wrote 3 days ago: outside the window
        ]
        return [
            {"phone": phone, "attributes": {"order_id": order_id, "tracking_number": tracking}}
            for phone, order_id, tracking in orders
        ]

    orders = orders_shipped_yesterday()
    save_orders = AddAttributesOperator(
        task_id="save_orders",
        recipients=orders,  # each row's own order_id and tracking_number, and:
        attributes={"shipped_on": "{{ dag_run.run_after | ds }}"},
    )
    notify_shipped = BroadcastBlockOperator(
        task_id="notify_shipped",
        block_name="shipping_update",
        recipients=orders,  # outside_window="skip", the default for many: reported, not a failure
    )

    find_vip = FindUserOperator(task_id="find_vip", phone="{{ params.vip_phone }}")
    vip_id = find_vip.output["messenger_user_id"]

    mark_shipped = AddAttributesOperator(
        task_id="mark_shipped",
        user_id=vip_id,
        attributes={"order_status": "dang_giao", "shipped_on": "{{ dag_run.run_after | ds }}"},
    )
    tag_shipped = AddTagsOperator(task_id="tag_shipped", user_id=vip_id, tags=["da_giao_van"])
    untag_waiting = RemoveTagsOperator(task_id="untag_waiting", user_id=vip_id, tags=["cho_giao_hang"])
    clear_cart = ResetAttributesOperator(task_id="clear_cart", user_id=vip_id, attributes=["gio_hang"])

    thank_vip = SendTextMessageOperator(
        task_id="thank_vip",
        user_id=vip_id,
        text="Cảm ơn {{ ti.xcom_pull(task_ids='find_vip')['first_name'] }} đã luôn ủng hộ shop! "
        "Đơn hàng của bạn đang trên đường giao.",
    )
    ask_about_delivery = SendDynamicMessageOperator(
        task_id="ask_about_delivery",
        user_id=vip_id,
        message={
            "messages": [
                {
                    "attachment": {
                        "type": "template",
                        "payload": {
                            "template_type": "button",
                            "text": "Theo dõi đơn hàng của bạn tại đây:",
                            "buttons": [
                                {
                                    "type": "web_url",
                                    "url": "https://example.com/tracking",
                                    "title": "Theo dõi",
                                },
                                {"type": "show_block", "block_name": "menu", "title": "Xem menu"},
                            ],
                        },
                    }
                },
                {
                    "text": "Khi nhận được hàng, bạn bấm giúp shop nhé:",
                    "quick_replies": [
                        {"title": "Đã nhận", "block_name": "delivery_received"},
                        {"title": "Chưa nhận", "block_name": "delivery_not_received"},
                    ],
                },
            ],
            "set_attributes": {"asked_delivery_on": "{{ dag_run.run_after | ds }}"},
        },
    )

    save_orders >> notify_shipped >> find_vip
    find_vip >> [mark_shipped, tag_shipped, untag_waiting, clear_cart] >> thank_vip >> ask_about_delivery
