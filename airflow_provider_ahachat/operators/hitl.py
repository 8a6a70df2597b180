"""
Human-in-the-loop operators whose question is asked in Messenger: one tap answers the task.

They are Airflow's own ``HITLOperator``, ``ApprovalOperator`` and ``HITLBranchOperator``: the
waiting, the timeout and its defaults, the "Required actions" page, the XCom result
(``chosen_options``, ``responded_by_user``, ``responded_at``) are Airflow's. What they add is the
:class:`~airflow_provider_ahachat.notifications.hitl.AhaChatHITLNotifier` and, among the assigned
users, one ``ahachat:<messenger_user_id>`` per approver.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.hitl import ApprovalOperator, HITLBranchOperator, HITLOperator

from airflow_provider_ahachat.hooks.ahachat import AhaChatHook
from airflow_provider_ahachat.models import MessageTag
from airflow_provider_ahachat.notifications.hitl import (
    APPROVER_PREFIX,
    DEFAULT_QUESTION_TAG,
    AhaChatHITLNotifier,
    _as_list,
)
from airflow_provider_ahachat.version_compat import hitl_arguments

if TYPE_CHECKING:
    from airflow.sdk import Context
    from airflow.sdk.execution_time.hitl import HITLUser

__all__ = ["AhaChatApprovalOperator", "AhaChatHITLBranchOperator", "AhaChatHITLOperator"]


class AhaChatHITLOperator(HITLOperator):
    """
    Airflow's ``HITLOperator``, asked in Messenger: the person taps one of the ``options``.

    Takes every argument of ``HITLOperator`` (``subject``, ``options``, ``body``, ``defaults``,
    ``multiple``, ``params``, ``notifiers``, ``assigned_users``, ``response_timeout``) and these:

    :param approvers: ``messenger_user_id`` of each person to ask, a string or a list (templated).
        Each becomes the assigned user ``ahachat:<id>``; ``assigned_users`` given too (people who
        answer in Airflow's UI) are kept.
    :param ahachat_conn_id: the ``ahachat`` connection whose bot asks the question (templated).
    :param option_labels: option to button title (20 characters at most); ``Approve`` and ``Reject``
        read "Đồng ý" and "Từ chối" unless given.
    :param question_block: the block broadcast to an approver outside Messenger's 24-hour window,
        with ``message_tag`` (see :class:`~airflow_provider_ahachat.notifications.hitl.AhaChatHITLNotifier`).
    :param message_tag: that broadcast's tag: none by default, and then an approver outside the
        window answers in Airflow's UI (the log names them, with the link). A tag Meta retired
        (``ACCOUNT_UPDATE``...) fails when the DAG is parsed.
    """

    template_fields: Sequence[str] = (*HITLOperator.template_fields, "approvers", "ahachat_conn_id")

    def __init__(
        self,
        *,
        approvers: str | Sequence[str],
        ahachat_conn_id: str = AhaChatHook.default_conn_name,
        option_labels: dict[str, str] | None = None,
        question_block: str | None = None,
        message_tag: MessageTag | str | None = DEFAULT_QUESTION_TAG,
        **kwargs: Any,
    ) -> None:
        # In ApprovalOperator and HITLBranchOperator below, this reaches their own __init__ first.
        super().__init__(**hitl_arguments(kwargs))
        self.approvers = approvers
        self.ahachat_conn_id = ahachat_conn_id
        self.ahachat_notifier = AhaChatHITLNotifier(
            ahachat_conn_id=ahachat_conn_id,
            option_labels=option_labels,
            question_block=question_block,
            message_tag=message_tag,
        )
        # Checked now, not at the first try: a label too long for a button, or an unknown option.
        from airflow_provider_ahachat.inbound.question import labels_for

        labels_for(list(self.options), option_labels)

    def execute(self, context: Context) -> Any:
        self._ask_in_messenger()
        return super().execute(context)

    def _ask_in_messenger(self) -> None:
        """Before Airflow writes the request: the rendered approvers as assigned users, and the notifier."""
        approvers = _as_list(self.approvers)
        if not approvers:
            from airflow_provider_ahachat.exceptions import AhaChatValidationError

            raise AhaChatValidationError("approvers: give at least one messenger_user_id")
        users: list[HITLUser] = list(self.assigned_users or [])
        known = {user.get("id") for user in users}
        users += [
            {"id": f"{APPROVER_PREFIX}{a}", "name": f"{APPROVER_PREFIX}{a}"}
            for a in approvers
            if f"{APPROVER_PREFIX}{a}" not in known
        ]
        self.assigned_users = users
        self.ahachat_notifier.approvers = approvers
        self.ahachat_notifier.ahachat_conn_id = self.ahachat_conn_id
        if self.ahachat_notifier not in self.notifiers:
            self.notifiers = [*self.notifiers, self.ahachat_notifier]


class AhaChatApprovalOperator(AhaChatHITLOperator, ApprovalOperator):
    """
    Airflow's ``ApprovalOperator``, asked in Messenger: "Đồng ý" (Approve) or "Từ chối" (Reject).

    On Reject, downstream tasks are skipped, as with ``ApprovalOperator``. Takes its arguments
    (``ignore_downstream_trigger_rules``, ``fail_on_reject`` and those of ``HITLOperator`` but
    ``options`` and ``multiple``) and those of :class:`AhaChatHITLOperator`, e.g.
    ``option_labels={"Approve": "Duyệt"}``.

    :param approvers: see :class:`AhaChatHITLOperator`.
    :param ahachat_conn_id: see :class:`AhaChatHITLOperator`.
    """


class AhaChatHITLBranchOperator(AhaChatHITLOperator, HITLBranchOperator):
    """
    Airflow's ``HITLBranchOperator``, asked in Messenger: the tapped option picks the branch.

    Takes its arguments (``options_mapping`` and those of ``HITLOperator``) and those of
    :class:`AhaChatHITLOperator`.

    :param approvers: see :class:`AhaChatHITLOperator`.
    :param ahachat_conn_id: see :class:`AhaChatHITLOperator`.
    """
