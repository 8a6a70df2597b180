"""
The AhaChat plugin: Airflow mounts the webhook receiver and the approvals' answer endpoint at
``/ahachat`` on its API server, with Airflow behind them (:mod:`.airflow_internals`).

Registered through the ``airflow.plugins`` entry point, so Airflow loads it with its default
settings. Both endpoints authenticate their callers themselves (``X-AhaChat-Secret``, a signed
token); Airflow applies none of its own authentication to a plugin's app.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow.plugins_manager import AirflowPlugin

from airflow_provider_ahachat.inbound import access_log
from airflow_provider_ahachat.inbound.airflow_internals import (
    Answer,
    read_connection,
    read_question,
    record_asset_event,
    record_hitl_answer,
)
from airflow_provider_ahachat.inbound.answer import approvals_router
from airflow_provider_ahachat.inbound.intake import LoggablePaths, keep_secret
from airflow_provider_ahachat.inbound.receiver import WebhookSettings, create_receiver_app
from airflow_provider_ahachat.inbound.tokens import AnswerToken, Question, secret_from_extra

if TYPE_CHECKING:
    from airflow_provider_ahachat.held.store import Customer, Held

#: Where Airflow mounts the receiver: ``/ahachat/webhooks/{conn_id}/{event}``.
URL_PREFIX = "/ahachat"


def load_webhook_settings(conn_id: str) -> WebhookSettings | None:
    """The webhook settings of the ``ahachat`` connection ``conn_id`` (secrets backends, env, DB)."""
    conn = read_connection(conn_id)
    if conn is None:
        return None
    return WebhookSettings.from_connection(
        conn_id, conn_type=conn.conn_type, login=conn.login, extra=conn.extra_dejson, password=conn.password
    )


def load_approval_secret(conn_id: str) -> str | None:
    """
    The approval secret of the ``ahachat`` connection ``conn_id``, None if there is none; the
    connection's secrets are registered to be masked.
    """
    conn = read_connection(conn_id)
    if conn is None or conn.conn_type != "ahachat":
        return None
    extra = conn.extra_dejson
    for name in ("approval_secret", "webhook_secret"):
        value = extra.get(name, extra.get(f"extra__ahachat__{name}"))
        keep_secret(value if isinstance(value, str) else None)
    keep_secret(conn.password)
    return secret_from_extra(extra)


def load_question(claim: AnswerToken) -> Question | None:
    """The record of the question the task instance a token names asked through its connection."""
    return read_question(claim.dag_id, claim.run_id, claim.task_id, claim.map_index, claim.conn_id)


def record_token_answer(token: AnswerToken, question: Question) -> str:
    """Record the answer a verified token grants, as the Airflow user ``ahachat:<approver>``."""
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


def deliver_held(customer: Customer, call: str, again: bool) -> tuple[list[Held], bool]:
    """
    The held messages a customer's call carries, from the store Airflow's configuration names
    (none when nothing was ever held); with ``again``, an earlier answer's to the same call first.
    """
    from airflow_provider_ahachat.held.location import stored_held

    store = stored_held(read_connection)
    if store is None:
        return [], False
    if again:
        earlier = store.delivered(customer, call=call)
        if earlier:
            return earlier, True
    return store.deliver(customer, call=call), False


def create_app() -> Any:
    """The receiver and the answer endpoint, with Airflow's connections, assets and HITL behind them."""
    app = create_receiver_app(
        load_settings=load_webhook_settings, record=record_asset_event, deliver_held=deliver_held
    )
    # /ahachat/approvals/answer: Messenger taps answer Human-in-the-loop tasks.
    app.include_router(
        approvals_router(
            load_question=load_question, load_secret=load_approval_secret, record=record_token_answer
        )
    )
    access_log.install()  # the answer URLs carry tokens: masked in the access log (Airflow 3.1's uvicorn)
    return app


class AhaChatPlugin(AirflowPlugin):
    """
    Mounts the AhaChat webhook receiver and answer endpoint at ``/ahachat`` on Airflow's API server,
    and keeps the access log lines of its paths on one line, without secrets
    (:class:`~airflow_provider_ahachat.inbound.intake.LoggablePaths`).
    """

    name = "ahachat"
    fastapi_apps = [  # noqa: RUF012 - the attribute Airflow reads
        {"app": create_app(), "url_prefix": URL_PREFIX, "name": "AhaChat webhooks"},
    ]
    fastapi_root_middlewares = [  # noqa: RUF012 - the attribute Airflow reads
        {
            "middleware": LoggablePaths,
            "args": [],
            "kwargs": {"prefix": f"{URL_PREFIX}/"},
            "name": "AhaChat paths in the access log",
        }
    ]
