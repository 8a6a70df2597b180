"""
What the tests of the webhook receiver share, in the test process against Airflow's metadata DB.

- :data:`BOT_ID`, :data:`CONN`, :func:`conn_json`: the AhaChat connection the calls name, as JSON.
- :func:`sync_consumer`: a DAG scheduled on events of a connection, written to the DB.
- :func:`clear_events`, :func:`recorded`: forget every event recorded; read those of one event.

Airflow is imported inside the functions: importing this module leaves it unimported.
"""

from __future__ import annotations

import json
from typing import Any

from airflow_provider_ahachat.events import ahachat_event

#: The bot of the connection :func:`conn_json` writes.
BOT_ID = "12404829"
#: The connection the receiver's calls name, unless a test names its own.
CONN = "aha_hook"


def conn_json(**extra: Any) -> str:
    """An AhaChat connection of :data:`BOT_ID` as ``AIRFLOW_CONN_*`` takes it, with these extra fields."""
    return json.dumps(
        {"conn_type": "ahachat", "login": BOT_ID, "password": "tok-abc", "extra": extra}, ensure_ascii=False
    )


def sync_consumer(dag_id: str, events: tuple[str, ...], conn_id: str) -> str:
    """A DAG scheduled on ``events`` of ``conn_id``, written to the DB so that their assets exist."""
    from airflow.sdk import DAG
    from airflow.sdk.bases.operator import BaseOperator

    from helpers.airflow_harness import sync_dag_to_db

    class Noop(BaseOperator):
        def execute(self, context: Any) -> None:
            return None

    with DAG(dag_id, schedule=[ahachat_event(e, ahachat_conn_id=conn_id) for e in events]) as dag:
        Noop(task_id="noop")
    sync_dag_to_db(dag)
    return dag.dag_id


def clear_events() -> None:
    """Delete every asset event and every queued asset-triggered run: a test sees only its own."""
    from airflow.models.asset import AssetDagRunQueue, AssetEvent
    from airflow.utils.session import create_session
    from sqlalchemy import delete

    with create_session() as session:
        session.execute(delete(AssetDagRunQueue))
        session.execute(delete(AssetEvent))


def recorded(event: str = "order_status", conn_id: str = CONN) -> list[dict[str, Any]]:
    """The extras of the events recorded on ``event``'s asset, oldest first."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    uri = ahachat_event(event, ahachat_conn_id=conn_id).uri
    with create_session() as session:
        rows = session.scalars(
            select(AssetEvent)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetModel.uri == uri)
            .order_by(AssetEvent.id)
        ).all()
        return [dict(row.extra) for row in rows]
