"""
The approvals part of the AhaChat plugin: Messenger taps answer Human-in-the-loop tasks.

Mounted with the webhook receiver at ``/ahachat`` on Airflow's API server: the answer endpoint
(:mod:`airflow_provider_ahachat.approvals.answer`) with Airflow's connections behind its secrets and
Airflow's own HITL answer path (:mod:`.hitl_answer`) behind its answers.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_ahachat.approvals.tokens import AnswerToken, secret_from_extra


def load_approval_secret(conn_id: str) -> str | None:
    """The approval secret of the ``ahachat`` connection ``conn_id``, None if there is none."""
    from airflow.exceptions import AirflowNotFoundException
    from airflow.models.connection import Connection

    try:
        conn = Connection.get_connection_from_secrets(conn_id)
    except AirflowNotFoundException:
        return None
    if conn.conn_type != "ahachat":
        return None
    return secret_from_extra(conn.extra_dejson)


def record_token_answer(token: AnswerToken) -> str:
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
        )
    )


def approvals_router() -> Any:
    """The answer endpoint with Airflow behind it."""
    from airflow_provider_ahachat.approvals.answer import approvals_router as router

    return router(load_secret=load_approval_secret, record=record_token_answer)
