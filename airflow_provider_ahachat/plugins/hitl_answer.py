"""
Record a Human-in-the-loop answer from the API server process, as Airflow's
``PATCH /api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}/hitlDetails`` does.

The only place that calls Airflow's internal ``update_hitl_detail`` route function; its test
(``tests/test_hitl_answer.py``) checks the contract this relies on: the function's parameters, the
user object it reads, the refusals it raises, and that it resumes the waiting task. Called
directly, the route skips its DAG permission check and its audit log row, and does not commit: the
checks that matter here (the try, the assigned users, a first answer) are made below, in the same
transaction, and the answer's audit line is written by the caller. Runs in a worker thread of the
API server.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["Answer", "AnswerOutcome", "record_hitl_answer"]

#: ``recorded``, or why nothing was: no such task instance or question, a later try is running,
#: an answer is already in, the user is not among the assigned users, no such option.
AnswerOutcome = Literal["recorded", "no_question", "earlier_try", "answered", "not_assigned", "bad_option"]

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
    """

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    try_number: int
    option: str
    user_id: str
    user_name: str


def _user(user_id: str, user_name: str) -> Any:
    from airflow.api_fastapi.auth.managers.models.base_user import BaseUser

    class AhaChatApprover(BaseUser):
        """The Messenger user answering, as Airflow's HITL route reads a user."""

        def get_id(self) -> str:
            return user_id

        def get_name(self) -> str:
            return user_name

    return AhaChatApprover()


def record_hitl_answer(answer: Answer) -> AnswerOutcome:
    """
    Record ``answer`` on the task instance's HITL request and resume the task, if it is still the
    question of that try, unanswered, and the user is among its assigned users.

    :param answer: what to record.
    :return: ``recorded``, or the reason nothing was.
    """
    with _ANSWER_LOCK:
        return _record(answer)


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
        if ti is None or ti.hitl_detail is None:
            return "no_question"
        if ti.try_number != answer.try_number:
            return "earlier_try"
        detail = ti.hitl_detail
        if detail.response_received:
            return "answered"
        if answer.user_id not in {user["id"] for user in detail.assigned_users or []}:
            return "not_assigned"
        if answer.option not in (detail.options or []):
            return "bad_option"
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
