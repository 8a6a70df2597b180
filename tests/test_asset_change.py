"""
The contract with Airflow's internal ``asset_manager.register_asset_change`` that the receiver
relies on, checked against the installed Airflow.
"""

from __future__ import annotations

import inspect
from datetime import timedelta
from typing import Any

import pytest

from airflow_provider_ahachat.events import ahachat_event

URI = "ahachat://contract_bot/order_status"


@pytest.fixture(scope="module")
def scheduled(airflow_db: Any) -> str:
    from airflow.sdk import DAG
    from airflow.sdk.bases.operator import BaseOperator
    from airflow_harness import sync_dag_to_db

    class Noop(BaseOperator):
        def execute(self, context: Any) -> None:
            return None

    with DAG(
        "t_asset_contract", schedule=[ahachat_event("order_status", ahachat_conn_id="contract_bot")]
    ) as dag:
        Noop(task_id="noop")
    sync_dag_to_db(dag)
    return dag.dag_id


def events_and_queue() -> tuple[list[dict[str, Any]], list[str]]:
    from airflow.models.asset import AssetDagRunQueue, AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        extras = session.scalars(
            select(AssetEvent.extra)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetModel.uri == URI)
            .order_by(AssetEvent.id)
        ).all()
        queued = session.scalars(select(AssetDagRunQueue.target_dag_id)).all()
        return [dict(e) for e in extras], list(queued)


def test_register_asset_change_takes_what_the_adapter_passes(airflow_db: Any) -> None:
    from airflow.assets.manager import asset_manager

    parameters = inspect.signature(asset_manager.register_asset_change).parameters
    for name in ("asset", "extra", "session", "source_is_api"):
        assert name in parameters, f"register_asset_change no longer takes {name}"
        assert parameters[name].kind is inspect.Parameter.KEYWORD_ONLY


def test_an_event_is_recorded_and_queues_the_dag(scheduled: str) -> None:
    from airflow_provider_ahachat.plugins.asset_change import record_asset_event

    assert record_asset_event(URI, {"messenger_user_id": "1", "fields": {"a": "b"}}, None) == "recorded"
    extras, queued = events_and_queue()
    assert extras[-1] == {"messenger_user_id": "1", "fields": {"a": "b"}}
    assert scheduled in queued


def test_a_repeated_key_is_found_in_the_window_only(scheduled: str) -> None:
    from airflow_provider_ahachat.plugins.asset_change import record_asset_event

    extra = {"messenger_user_id": "2", "idempotency_key": "contract-k"}
    assert record_asset_event(URI, extra, "contract-k") == "recorded"
    assert record_asset_event(URI, extra, "contract-k") == "duplicate"
    assert record_asset_event(URI, {**extra, "idempotency_key": "other"}, "other") == "recorded"
    assert record_asset_event(URI, extra, "contract-k", window=timedelta(0)) == "recorded"
    keys = [e.get("idempotency_key") for e in events_and_queue()[0]]
    assert keys.count("contract-k") == 2


def test_the_queue_row_covers_every_event_recorded_so_far(scheduled: str) -> None:
    """
    The scheduler's next run takes the events up to the queue row's ``created_at``: it must not stay
    at the first event's time while more customers write (apache/airflow#56050).
    """
    from airflow.models.asset import AssetDagRunQueue, AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import delete, func, select

    from airflow_provider_ahachat.plugins.asset_change import record_asset_event

    with create_session() as session:
        session.execute(delete(AssetDagRunQueue))
    for n in range(3):
        assert record_asset_event(URI, {"messenger_user_id": str(n)}, None) == "recorded"
        with create_session() as session:
            asset_id = session.scalar(select(AssetModel.id).where(AssetModel.uri == URI))
            newest = session.scalar(
                select(func.max(AssetEvent.timestamp)).where(AssetEvent.asset_id == asset_id)
            )
            queued = session.scalar(
                select(AssetDagRunQueue.created_at).where(
                    AssetDagRunQueue.asset_id == asset_id, AssetDagRunQueue.target_dag_id == scheduled
                )
            )
        assert queued is not None
        assert newest is not None
        assert queued >= newest


def test_an_asset_no_dag_declares_is_not_created(airflow_db: Any) -> None:
    from airflow_provider_ahachat.plugins.asset_change import record_asset_event

    assert record_asset_event("ahachat://contract_bot/nobody", {"messenger_user_id": "1"}, None) == "no_asset"
