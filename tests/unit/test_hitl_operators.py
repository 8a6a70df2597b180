"""
The AhaChat HITL operators as Airflow builds them: arguments, defaults, templates, dependencies.

The waiting and the answering run end to end in ``test_approvals_airflow.py``; this module checks,
without starting Airflow, what each of the three classes takes and what it hands to Airflow.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from airflow.providers.standard.operators.hitl import ApprovalOperator, HITLBranchOperator, HITLOperator
from airflow.sdk import DAG, task

from airflow_provider_ahachat.exceptions import AhaChatValidationError
from airflow_provider_ahachat.notifications.hitl import AhaChatHITLNotifier
from airflow_provider_ahachat.operators.hitl import (
    AhaChatApprovalOperator,
    AhaChatHITLBranchOperator,
    AhaChatHITLOperator,
)

OWNER = "2412110000000001"
START = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def build(cls: type[AhaChatHITLOperator], **kwargs: Any) -> AhaChatHITLOperator:
    with DAG("hitl_ops", schedule=None, start_date=START, default_args={"ahachat_conn_id": "shop_bot"}):
        return cls(task_id="ask", subject="Hoàn tiền?", approvers=OWNER, **kwargs)


CASES = [
    (AhaChatHITLOperator, HITLOperator, {"options": ["Một", "Hai", "Ba"]}),
    (AhaChatApprovalOperator, ApprovalOperator, {}),
    (AhaChatHITLBranchOperator, HITLBranchOperator, {"options": ["left", "right"]}),
]


@pytest.mark.parametrize(("cls", "airflow_cls", "kwargs"), CASES, ids=lambda c: getattr(c, "__name__", ""))
def test_each_operator_is_airflows_own_with_the_approvers_and_the_connection(
    cls: type[AhaChatHITLOperator], airflow_cls: type[HITLOperator], kwargs: dict[str, Any]
) -> None:
    op = build(cls, **kwargs)
    assert isinstance(op, airflow_cls)
    assert op.task_type == cls.__name__
    # default_args reach the AhaChat arguments as they reach Airflow's.
    assert op.ahachat_conn_id == "shop_bot"
    assert op.ahachat_notifier.ahachat_conn_id == "shop_bot"
    assert {"subject", "body", "approvers", "ahachat_conn_id"} <= set(op.template_fields)
    if airflow_cls is ApprovalOperator:
        assert op.options == ["Approve", "Reject"]


@pytest.mark.parametrize(("cls", "airflow_cls", "kwargs"), CASES, ids=lambda c: getattr(c, "__name__", ""))
def test_the_approvers_become_assigned_users_and_the_notifier_is_added_once(
    cls: type[AhaChatHITLOperator], airflow_cls: type[HITLOperator], kwargs: dict[str, Any]
) -> None:
    op = build(cls, assigned_users=[{"id": "lan", "name": "Lan"}], **kwargs)
    op.approvers = [OWNER, "2412110000000002"]  # as rendered
    for _ in range(2):  # a second try must not add them again
        op._ask_in_messenger()
    assert op.assigned_users == [
        {"id": "lan", "name": "Lan"},
        {"id": f"ahachat:{OWNER}", "name": f"ahachat:{OWNER}"},
        {"id": "ahachat:2412110000000002", "name": "ahachat:2412110000000002"},
    ]
    notifiers = [n for n in op.notifiers if isinstance(n, AhaChatHITLNotifier)]
    assert notifiers == [op.ahachat_notifier]
    assert op.ahachat_notifier.approvers == [OWNER, "2412110000000002"]


@pytest.mark.parametrize(("cls", "airflow_cls", "kwargs"), CASES, ids=lambda c: getattr(c, "__name__", ""))
def test_a_label_too_long_for_a_button_is_refused_when_the_dag_is_parsed(
    cls: type[AhaChatHITLOperator], airflow_cls: type[HITLOperator], kwargs: dict[str, Any]
) -> None:
    option = (
        "Approve"
        if airflow_cls is ApprovalOperator
        else "left"
        if airflow_cls is HITLBranchOperator
        else "Một"
    )
    with pytest.raises(AhaChatValidationError, match="20"):
        build(cls, option_labels={option: "Đồng ý hoàn tiền cho đơn này"}, **kwargs)


def test_no_approver_is_refused_before_anything_is_asked() -> None:
    op = build(AhaChatApprovalOperator)
    op.approvers = []
    with pytest.raises(AhaChatValidationError, match="approvers"):
        op._ask_in_messenger()


def test_approvers_from_an_upstream_task_make_it_upstream() -> None:
    with DAG("hitl_xcom", schedule=None, start_date=START):

        @task
        def owner() -> str:
            return OWNER

        source = owner()
        op = AhaChatApprovalOperator(task_id="ask", subject="Hoàn tiền?", approvers=source)  # type: ignore[arg-type]
    assert op.upstream_task_ids == {"owner"}
