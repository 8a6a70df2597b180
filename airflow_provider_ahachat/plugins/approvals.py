"""
The approvals part of the AhaChat plugin: Messenger taps answer Human-in-the-loop tasks.

Mounted with the webhook receiver at ``/ahachat`` on Airflow's API server: the answer endpoint
(:mod:`airflow_provider_ahachat.approvals.answer`) with Airflow behind it: connections for the
secrets, the task's own record of its question (an XCom the notifier wrote), and Airflow's own HITL
answer path (:mod:`.hitl_answer`) for the answers.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from airflow_provider_ahachat.approvals.tokens import AnswerToken, Question, secret_from_extra
from airflow_provider_ahachat.events.intake import keep_secret


def load_approval_secret(conn_id: str) -> str | None:
    """
    The approval secret of the ``ahachat`` connection ``conn_id``, None if there is none; the
    connection's secrets are registered to be masked.
    """
    from airflow.exceptions import AirflowNotFoundException
    from airflow.models.connection import Connection

    try:
        conn = Connection.get_connection_from_secrets(conn_id)
    except AirflowNotFoundException:
        return None
    if conn.conn_type != "ahachat":
        return None
    extra = conn.extra_dejson
    for name in ("approval_secret", "webhook_secret"):
        value = extra.get(name, extra.get(f"extra__ahachat__{name}"))
        keep_secret(value if isinstance(value, str) else None)
    keep_secret(conn.password)
    return secret_from_extra(extra)


def load_question(claim: AnswerToken) -> Question | None:
    """The record of the question the task instance a token names asked through its connection."""
    from airflow_provider_ahachat.plugins.hitl_answer import read_question

    return read_question(claim.dag_id, claim.run_id, claim.task_id, claim.map_index, claim.conn_id)


def record_token_answer(token: AnswerToken, question: Question) -> str:
    """Record the answer a verified token grants, as the Airflow user ``ahachat:<approver>``."""
    from airflow_provider_ahachat.plugins.hitl_answer import Answer, record_hitl_answer

    return record_hitl_answer(
        Answer(
            dag_id=token.dag_id,
            run_id=token.run_id,
            task_id=token.task_id,
            map_index=token.map_index,
            try_number=token.try_number,
            option=token.option,
            user_id=token.airflow_user_id,
            user_name=token.airflow_user_id,
            deadline=datetime.fromtimestamp(question.expires, timezone.utc),
        )
    )


def approvals_router() -> Any:
    """The answer endpoint with Airflow behind it."""
    from airflow_provider_ahachat.approvals.answer import approvals_router as router

    return router(load_question=load_question, load_secret=load_approval_secret, record=record_token_answer)
