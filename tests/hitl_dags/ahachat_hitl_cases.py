"""
DAGs for the approvals end-to-end test (tests/test_approvals_airflow.py): timeouts, a retry, a
question nobody can be asked, one whose approver is outside Messenger's 24-hour window, and
questions with more options than Messenger has buttons for.
``SHOP_OWNER_ID`` and ``AHACHAT_CONN_ID`` come from the environment.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG

from airflow_provider_ahachat.operators.hitl import AhaChatApprovalOperator, AhaChatHITLOperator
from airflow_provider_ahachat.version_compat import hitl_takes_response_timeout

OWNER = os.environ.get("SHOP_OWNER_ID", "6620193847561029")
SHORT = timedelta(seconds=int(os.environ.get("HITL_SHORT_TIMEOUT", "8")))
ARGS: dict[str, Any] = {"ahachat_conn_id": os.environ.get("AHACHAT_CONN_ID", "ahachat_sandbox"), "retries": 0}
START = pendulum.datetime(2026, 1, 1, tz="UTC")


class ShortFirstTry(AhaChatApprovalOperator):
    """Its first try times out quickly (and fails: no defaults); the retry waits ten minutes."""

    def execute(self, context: Any) -> Any:
        self.response_timeout = SHORT if context["ti"].try_number == 1 else timedelta(minutes=10)
        if not hitl_takes_response_timeout():  # the standard provider before 1.13 (Airflow 3.1)
            self.execution_timeout = self.response_timeout
        return super().execute(context)


with DAG("ahachat_hitl_timeout_default", schedule=None, start_date=START, default_args=ARGS):
    AhaChatHITLOperator(
        task_id="ask",
        subject="Giao hàng buổi nào?",
        options=["Sáng", "Chiều", "Tối"],
        defaults="Chiều",
        response_timeout=SHORT,
        approvers=OWNER,
    )

with DAG("ahachat_hitl_timeout_fail", schedule=None, start_date=START, default_args=ARGS):
    AhaChatApprovalOperator(task_id="ask", subject="Nhập thêm hàng?", response_timeout=SHORT, approvers=OWNER)

with DAG(
    "ahachat_hitl_retry",
    schedule=None,
    start_date=START,
    default_args={**ARGS, "retries": 1, "retry_delay": timedelta(seconds=1)},
):
    ShortFirstTry(task_id="ask", subject="Chấp nhận chênh lệch 12 sản phẩm?", approvers=OWNER)

with DAG("ahachat_hitl_nobody", schedule=None, start_date=START, default_args=ARGS):
    AhaChatApprovalOperator(task_id="ask", subject="Ai đó?", approvers=["1111111111111111"])

# Bảo last wrote 3 days ago: Messenger refuses the question; the task waits for an answer in the UI.
with DAG("ahachat_hitl_outside_window", schedule=None, start_date=START, default_args=ARGS):
    AhaChatApprovalOperator(task_id="ask", subject="Hoàn tiền đơn DH10299?", approvers="5310298476123984")

# Messenger's limits, in one run: 4 and 13 options go as quick replies, 14 as a link to Airflow's UI.
SLOTS = ["8h-10h", "10h-12h", "14h-16h", "19h-21h"]
WAREHOUSES = [f"Kho Quận {n}" for n in range(1, 13)] + ["Kho Thủ Đức"]
PROVINCES = [
    "Hà Nội", "Hải Phòng", "Quảng Ninh", "Nghệ An", "Huế", "Đà Nẵng", "Khánh Hòa",
    "Lâm Đồng", "Đồng Nai", "Bình Dương", "TP. Hồ Chí Minh", "Long An", "Cần Thơ", "Cà Mau",
]  # fmt: skip

with DAG("ahachat_hitl_many_options", schedule=None, start_date=START, default_args=ARGS):
    AhaChatHITLOperator(
        task_id="ask_slot", subject="Giao đơn DH10240 lúc nào?", options=SLOTS, approvers=OWNER
    )
    AhaChatHITLOperator(
        task_id="ask_warehouse", subject="Xuất đơn DH10241 từ kho nào?", options=WAREHOUSES, approvers=OWNER
    )
    AhaChatHITLOperator(
        task_id="ask_province", subject="Đơn DH10242 giao về tỉnh nào?", options=PROVINCES, approvers=OWNER
    )
