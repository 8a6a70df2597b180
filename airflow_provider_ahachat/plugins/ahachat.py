"""
The AhaChat plugin: Airflow mounts the webhook receiver at ``/ahachat`` on its API server.

Registered through the ``airflow.plugins`` entry point, so Airflow loads it with its default
settings. The receiver authenticates its callers itself (``X-AhaChat-Secret``); Airflow applies
none of its own authentication to a plugin's app.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin

from airflow_provider_ahachat.events.intake import LoggablePaths
from airflow_provider_ahachat.events.receiver import WebhookSettings, create_receiver_app
from airflow_provider_ahachat.plugins import access_log
from airflow_provider_ahachat.plugins.approvals import approvals_router
from airflow_provider_ahachat.plugins.asset_change import record_asset_event

#: Where Airflow mounts the receiver: ``/ahachat/webhooks/{conn_id}/{event}``.
URL_PREFIX = "/ahachat"


def load_webhook_settings(conn_id: str) -> WebhookSettings | None:
    """The webhook settings of the ``ahachat`` connection ``conn_id`` (secrets backends, env, DB)."""
    from airflow.exceptions import AirflowNotFoundException
    from airflow.models.connection import Connection

    try:
        conn = Connection.get_connection_from_secrets(conn_id)
    except AirflowNotFoundException:
        return None
    return WebhookSettings.from_connection(
        conn_id, conn_type=conn.conn_type, login=conn.login, extra=conn.extra_dejson, password=conn.password
    )


def create_app() -> Any:
    """The receiver with Airflow's connections and asset events behind it."""
    app = create_receiver_app(load_settings=load_webhook_settings, record=record_asset_event)
    app.include_router(approvals_router())  # /ahachat/approvals/answer: Messenger taps answer HITL tasks
    access_log.install()  # the answer URLs carry tokens: masked in the access log (Airflow 3.1's uvicorn)
    return app


class AhaChatPlugin(AirflowPlugin):
    """
    Mounts the AhaChat webhook receiver at ``/ahachat`` on Airflow's API server, and keeps the access
    log lines of its paths on one line, without secrets
    (:class:`~airflow_provider_ahachat.events.intake.LoggablePaths`).
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
