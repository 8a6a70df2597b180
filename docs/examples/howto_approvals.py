"""The how-to "Approvals": the HITL operators. ``tests/unit/test_docs_examples.py`` builds them."""

from __future__ import annotations

# [START howto_approvals]
from datetime import timedelta

from airflow.sdk import DAG

from airflow_provider_ahachat.operators.hitl import AhaChatApprovalOperator, AhaChatHITLBranchOperator

with DAG("howto_approvals", schedule=None, params={"amount": "450.000đ", "order_id": "DH10231"}) as dag:
    approve = AhaChatApprovalOperator(
        task_id="approve_refund",
        subject="Duyệt hoàn tiền {{ params.amount }} cho đơn {{ params.order_id }}?",
        body="Khách hàng yêu cầu hoàn tiền.",
        approvers=["6620193847561029"],  # messenger_user_id of each person asked (templated)
        ahachat_conn_id="ahachat_shop",
        response_timeout=timedelta(hours=4),  # the buttons stop working then, too
    )

    route = AhaChatHITLBranchOperator(  # the tapped option picks the branch
        task_id="approve_or_decline",
        subject="Duyệt hoàn tiền?",
        options=["Approve", "Reject"],
        options_mapping={"Approve": "refund", "Reject": "tell_declined"},
        approvers="{{ var.value.shop_owner_id }}",
    )
# [END howto_approvals]
