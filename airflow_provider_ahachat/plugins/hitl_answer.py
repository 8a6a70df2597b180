"""
Record a Human-in-the-loop answer from the API server process, as Airflow's
``PATCH /api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}/hitlDetails`` does.

The only place that calls Airflow's internal ``update_hitl_detail`` route function, and that reads
a question's record (the XCom the notifier wrote, :func:`read_question`); its test
(``tests/test_hitl_answer.py``) checks the contract this relies on: the function's parameters, the
user object it reads, the refusals it raises, and that it resumes the waiting task. Called
directly, the route skips its DAG permission check and its audit log row, and does not commit: the
checks that matter here are made below, in the same transaction, from the task instance itself:
it waits for input (:func:`~airflow_provider_ahachat.version_compat.hitl_waiting_states`), on the
try that asked, before its deadline (the response timeout Airflow set on the task instance, and the
one the task recorded with its question), unanswered, and the user is among the assigned users.
The answer's audit line is written by the caller. Runs in a worker thread of the API server.

An answer resumes the task only once the task has been parked for a while (see
:func:`settle_seconds`). The worker process that parked the task reports its exit to the scheduler as
a success of the same try; Airflow 3.3's scheduler fails a resumed task instance that it has already
queued (or started) again when that stale report arrives after the resume ("finished with state
success, but the task instance's state attribute is queued"; apache/airflow issues 67287 and 72716).
The question reaches Messenger just before the task parks, so a quick tap would otherwise resume it
within that window. A tap that comes earlier waits (at most :data:`MAX_HOLD` seconds) instead.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal

from airflow_provider_ahachat.version_compat import hitl_waiting_states

if TYPE_CHECKING:
    from airflow_provider_ahachat.approvals.tokens import Question

__all__ = [
    "MAX_HOLD",
    "SCHEDULER_MARGIN",
    "Answer",
    "AnswerOutcome",
    "read_question",
    "record_hitl_answer",
    "settle_seconds",
]

#: ``recorded``, or why nothing was: no such task instance or question, a later try is running,
#: an answer is already in, the task no longer waits for one (failed, succeeded, skipped...), its
#: deadline has passed, the user is not among the assigned users, no such option, or the task did
#: not park in time for the answer to resume it safely (the person is asked to tap again).
AnswerOutcome = Literal[
    "recorded",
    "no_question",
    "earlier_try",
    "answered",
    "closed",
    "expired",
    "not_assigned",
    "bad_option",
    "unavailable",
]

#: Seconds, beyond the worker's own delay, for the scheduler to read a reaped worker's exit: one pass
#: of its loop, which reads the executor's results every pass (about a second when busy).
SCHEDULER_MARGIN = 2.0
#: The longest a tap waits for its task to park and settle. AhaChat gives the button's URL about ten
#: seconds to answer; past this the person reads "try again" rather than nothing.
MAX_HOLD = 9.0
#: How often a waiting tap looks at the task instance again.
_POLL = 0.25

#: One answer at a time in this process, so two taps that arrive together cannot both pass the
#: checks on a database without row locks (SQLite); Airflow's own row locks cover the others.
_ANSWER_LOCK = threading.Lock()


@dataclass(frozen=True)
class Answer:
    """
    What to record.

    :param dag_id: the DAG.
    :param run_id: the DAG run.
    :param task_id: the task.
    :param map_index: the map index, -1 when not mapped.
    :param try_number: the try the question belongs to; another try records nothing.
    :param option: the chosen option.
    :param user_id: the answering user's ID, as it must appear among the assigned users.
    :param user_name: the answering user's name, shown by Airflow as ``responded_by``.
    :param deadline: the response deadline the task recorded with its question, if any (the one
        Airflow keeps on the task instance applies as well).
    """

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    try_number: int
    option: str
    user_id: str
    user_name: str
    deadline: datetime | None = None


def _user(user_id: str, user_name: str) -> Any:
    from airflow.api_fastapi.auth.managers.models.base_user import BaseUser

    class AhaChatApprover(BaseUser):
        """The Messenger user answering, as Airflow's HITL route reads a user."""

        def get_id(self) -> str:
            return user_id

        def get_name(self) -> str:
            return user_name

    return AhaChatApprover()


def settle_seconds() -> float:
    """
    How long a task must have been parked before an answer may resume it: ``[workers]
    min_heartbeat_interval`` (the longest the task's supervisor waits in ``select`` before it sees
    its task process gone, 5 s by default) plus :data:`SCHEDULER_MARGIN`.
    """
    from airflow_provider_ahachat.version_compat import conf

    return float(conf().getfloat("workers", "min_heartbeat_interval", fallback=5)) + SCHEDULER_MARGIN


def record_hitl_answer(
    answer: Answer,
    *,
    settle: float | None = None,
    max_hold: float = MAX_HOLD,
    sleep: Callable[[float], None] = time.sleep,
) -> AnswerOutcome:
    """
    Record ``answer`` on the task instance's HITL request and resume the task, if the task still
    waits for it: the question of that try, before its deadline, unanswered, and the user among its
    assigned users.

    An answer to a task that is not parked yet, or was parked less than ``settle`` seconds ago,
    waits until it is (see the module's docstring), at most ``max_hold`` seconds: then it records
    nothing and the outcome is ``unavailable``.

    :param answer: what to record.
    :param settle: seconds the task must have been parked; :func:`settle_seconds` by default.
    :param max_hold: the longest to wait, in seconds.
    :param sleep: how to wait.
    :return: ``recorded``, or the reason nothing was.
    """
    settle = settle_seconds() if settle is None else settle
    deadline = time.monotonic() + max_hold
    while (wait := _until_settled(answer, settle)) > 0:
        if time.monotonic() + min(wait, _POLL) > deadline:
            return "unavailable"
        sleep(min(wait, _POLL))
    with _ANSWER_LOCK:
        return _record(answer)


def _until_settled(answer: Answer, settle: float) -> float:
    """Seconds to wait before ``answer`` may resume its task; 0 when it may (or will be refused)."""
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        row = session.execute(
            select(
                TaskInstance.state, TaskInstance.try_number, TaskInstance.updated_at, HITLDetail.responded_at
            )
            .join(HITLDetail, HITLDetail.ti_id == TaskInstance.id)
            .where(
                TaskInstance.dag_id == answer.dag_id,
                TaskInstance.run_id == answer.run_id,
                TaskInstance.task_id == answer.task_id,
                TaskInstance.map_index == answer.map_index,
            )
        ).first()
    if row is None or row.try_number != answer.try_number or row.responded_at is not None:
        return 0.0  # refused below: no question, another try, already answered
    state = str(getattr(row.state, "value", row.state))
    if state == "running":  # the question is out, the task parks next
        return _POLL
    if state not in hitl_waiting_states() or row.updated_at is None:
        return 0.0
    parked_for = (datetime.now(timezone.utc) - row.updated_at).total_seconds()
    return max(0.0, settle - parked_for)


def _record(answer: Answer) -> AnswerOutcome:
    from airflow.api_fastapi.core_api.datamodels.hitl import UpdateHITLDetailPayload
    from airflow.api_fastapi.core_api.routes.public.hitl import update_hitl_detail
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from fastapi import HTTPException
    from sqlalchemy import select
    from sqlalchemy.orm import joinedload

    with create_session() as session:
        ti = session.scalar(
            select(TaskInstance)
            .where(
                TaskInstance.dag_id == answer.dag_id,
                TaskInstance.run_id == answer.run_id,
                TaskInstance.task_id == answer.task_id,
                TaskInstance.map_index == answer.map_index,
            )
            .options(joinedload(TaskInstance.hitl_detail))  # the relationship is lazy="raise"
        )
        refusal = _refusal(ti, answer)
        if refusal is not None:
            return refusal
        try:
            update_hitl_detail(
                dag_id=answer.dag_id,
                dag_run_id=answer.run_id,
                task_id=answer.task_id,
                update_hitl_detail_payload=UpdateHITLDetailPayload(chosen_options=[answer.option]),
                user=_user(answer.user_id, answer.user_name),
                session=session,
                map_index=answer.map_index,
            )
        except HTTPException as err:
            session.rollback()
            return {409: "answered", 403: "not_assigned", 400: "bad_option"}.get(  # type: ignore[return-value]
                err.status_code, "no_question"
            )
    return "recorded"


def _refusal(ti: Any, answer: Answer) -> AnswerOutcome | None:
    """Why the task instance cannot take ``answer`` now, from its own state; None if it can."""
    if ti is None or ti.hitl_detail is None:
        return "no_question"
    if ti.try_number != answer.try_number:
        return "earlier_try"
    detail = ti.hitl_detail
    if detail.response_received:
        return "answered"
    deadlines = [d for d in (getattr(ti, "trigger_timeout", None), answer.deadline) if d is not None]
    past_deadline = bool(deadlines) and datetime.now(timezone.utc) >= min(deadlines)
    if str(getattr(ti.state, "value", ti.state)) not in hitl_waiting_states():
        return "expired" if past_deadline else "closed"
    if past_deadline:
        return "expired"  # the scheduler has not swept it yet; the deadline has passed all the same
    if answer.user_id not in {user["id"] for user in detail.assigned_users or []}:
        return "not_assigned"
    if answer.option not in (detail.options or []):
        return "bad_option"
    return None


def read_question(dag_id: str, run_id: str, task_id: str, map_index: int, conn_id: str) -> Question | None:
    """
    The record of the question the task instance asked through ``conn_id``: the XCom
    ``ahachat_question.<conn_id>`` its notifier wrote (tasks write XComs through the Execution API;
    a tap cannot). None if there is none, or it cannot be read.
    """
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from airflow_provider_ahachat.approvals.tokens import QUESTION_XCOM_PREFIX, Question

    with create_session() as session:
        row = session.scalar(
            select(XComModel).where(
                XComModel.dag_id == dag_id,
                XComModel.run_id == run_id,
                XComModel.task_id == task_id,
                XComModel.map_index == map_index,
                XComModel.key == f"{QUESTION_XCOM_PREFIX}{conn_id}",
            )
        )
        if row is None:
            return None
        try:
            value = XComModel.deserialize_value(row)
        except Exception:  # a value another XCom backend keeps elsewhere: no question we can check
            return None
    return Question.from_json(value)
