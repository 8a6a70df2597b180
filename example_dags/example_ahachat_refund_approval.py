"""
A refund waits for the shop owner's "Đồng ý" in Messenger, then runs; or the customer is told no.

- ``load_refund`` reads the refund request of the order given in the run's conf (``order_id``,
  ``DH10231`` by default) from the shop's SQLite database: the customer and the amount.
- ``approve_refund`` (:class:`~airflow_provider_ahachat.operators.hitl.AhaChatHITLBranchOperator`)
  asks the owner in Messenger "Duyệt hoàn tiền 450.000đ cho đơn DH10231?" with the buttons
  "Đồng ý" and "Từ chối". A tap answers the task as the Airflow user ``ahachat:<owner's ID>``;
  the owner can answer on Airflow's "Required actions" page too. Without an answer in a day the
  task fails, and nothing is refunded.
- On "Đồng ý": ``refund`` marks the refund done in the database and ``tell_refunded`` tells the
  customer. On "Từ chối": ``tell_declined`` tells the customer the shop will call them.

It talks to the connection ``ahachat_sandbox`` (the local sandbox, so that trying it messages
nobody), whose extra ``approval_secret`` (or ``webhook_secret``) signs the buttons, and reads the
SQL connection ``shop_db``; ``AHACHAT_CONN_ID``, ``SHOP_DB_CONN_ID`` and ``SHOP_OWNER_ID`` (the
owner's ``messenger_user_id``) choose others. The table is
``refund_requests(order_id, messenger_user_id, amount, status)``; ``[api] base_url`` must be the
API server's address as AhaChat reaches it.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_ahachat.operators.ahachat import SendTextMessageOperator
from airflow_provider_ahachat.operators.hitl import AhaChatHITLBranchOperator

AHACHAT_CONN_ID = os.environ.get("AHACHAT_CONN_ID", "ahachat_sandbox")
SHOP_DB_CONN_ID = os.environ.get("SHOP_DB_CONN_ID", "shop_db")
SHOP_OWNER_ID = os.environ.get("SHOP_OWNER_ID", "5566778899001122")


def vnd(amount: int) -> str:
    """450000 as "450.000đ", as a Vietnamese shop writes it."""
    return f"{amount:,}".replace(",", ".") + "đ"


with DAG(
    dag_id="example_ahachat_refund_approval",
    description="Refund an order once the shop owner approves it in Messenger",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="Asia/Ho_Chi_Minh"),
    catchup=False,
    params={"order_id": "DH10231"},
    default_args={"ahachat_conn_id": AHACHAT_CONN_ID, "retries": 0},
    tags=["ahachat", "example", "approval"],
) as dag:

    @task
    def load_refund(params: Any = None) -> dict[str, Any]:
        """The refund request of the order: who asked, and how much."""
        from airflow.sdk import BaseHook

        order_id = str((params or {}).get("order_id") or "").strip().upper()
        database = BaseHook.get_connection(SHOP_DB_CONN_ID).get_hook()
        rows = database.get_records(
            "SELECT messenger_user_id, amount FROM refund_requests WHERE order_id = :order_id",
            parameters={"order_id": order_id},
        )
        if not rows:
            raise ValueError(f"order_id: no refund request for {order_id!r}")
        user_id, amount = rows[0]
        return {"order_id": order_id, "user_id": str(user_id), "amount": vnd(int(amount))}

    refund_request = load_refund()

    approve_refund = AhaChatHITLBranchOperator(
        task_id="approve_refund",
        subject=(
            "Duyệt hoàn tiền {{ ti.xcom_pull('load_refund')['amount'] }}"
            " cho đơn {{ ti.xcom_pull('load_refund')['order_id'] }}?"
        ),
        body="Khách hàng {{ ti.xcom_pull('load_refund')['user_id'] }} yêu cầu hoàn tiền.",
        options=["Approve", "Reject"],
        options_mapping={"Approve": "refund", "Reject": "tell_declined"},
        approvers=[SHOP_OWNER_ID],
        response_timeout=timedelta(days=1),
    )

    @task
    def refund(request: Any) -> None:
        """Mark the refund done (a real shop would call its payment provider here)."""
        from airflow.sdk import BaseHook

        database = BaseHook.get_connection(SHOP_DB_CONN_ID).get_hook()
        database.run(
            "UPDATE refund_requests SET status = 'refunded' WHERE order_id = :order_id",
            parameters={"order_id": request["order_id"]},
        )

    tell_refunded = SendTextMessageOperator(
        task_id="tell_refunded",
        user_id="{{ ti.xcom_pull('load_refund')['user_id'] }}",
        text=(
            "Shop đã hoàn {{ ti.xcom_pull('load_refund')['amount'] }} cho đơn"
            " {{ ti.xcom_pull('load_refund')['order_id'] }}. Tiền sẽ về tài khoản của bạn trong 1-3 ngày."
        ),
    )
    tell_declined = SendTextMessageOperator(
        task_id="tell_declined",
        user_id="{{ ti.xcom_pull('load_refund')['user_id'] }}",
        text=(
            "Shop chưa thể hoàn tiền cho đơn {{ ti.xcom_pull('load_refund')['order_id'] }}."
            " Nhân viên sẽ gọi cho bạn để hỗ trợ."
        ),
    )

    refunded = refund(refund_request)
    refund_request >> approve_refund >> [refunded, tell_declined]
    refunded >> tell_refunded
