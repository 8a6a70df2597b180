"""
Record an asset event from the API server process, as Airflow's ``POST /api/v2/assets/events`` does.

The only place that calls Airflow's internal ``asset_manager.register_asset_change``; its test
(``tests/test_asset_change.py``) checks the contract this relies on. Runs in a worker thread of the
API server, with its own database session.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow_provider_ahachat.events.receiver import IDEMPOTENCY_WINDOW, Outcome

#: One repeated call at a time, so two retries that arrive together cannot both record.
_IDEMPOTENCY_LOCK = threading.Lock()


def record_asset_event(
    uri: str, extra: dict[str, Any], idempotency_key: str | None, *, window: timedelta = IDEMPOTENCY_WINDOW
) -> Outcome:
    """
    Record an event on the asset ``uri`` (named as its URI) and queue the DAG runs scheduled on it.

    :param uri: the asset's URI (and name), as :func:`~airflow_provider_ahachat.events.ahachat_event`
        makes it.
    :param extra: the event's ``extra``.
    :param idempotency_key: when given, and an event of this asset with the same
        ``extra["idempotency_key"]`` was recorded within ``window``, nothing is recorded.
    :param window: how far back a repeated key is looked for.
    :return: ``recorded``, ``duplicate``, or ``no_asset`` when no DAG declares the asset.
    """
    if idempotency_key is None:
        return _record(uri, extra, None, window)
    with _IDEMPOTENCY_LOCK:
        return _record(uri, extra, idempotency_key, window)


def _record(uri: str, extra: dict[str, Any], idempotency_key: str | None, window: timedelta) -> Outcome:
    from airflow.assets.manager import asset_manager
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        asset = session.scalar(select(AssetModel).where(AssetModel.name == uri, AssetModel.uri == uri))
        if asset is None:
            return "no_asset"
        if idempotency_key is not None:
            seen = session.scalar(
                select(AssetEvent.id)
                .where(
                    AssetEvent.asset_id == asset.id,
                    AssetEvent.timestamp >= datetime.now(timezone.utc) - window,
                    AssetEvent.extra["idempotency_key"].as_string() == idempotency_key,
                )
                .limit(1)
            )
            if seen is not None:
                return "duplicate"
        event = asset_manager.register_asset_change(
            asset=asset, extra=extra, session=session, source_is_api=True
        )
        if event is None:
            return "no_asset"
        keep_in_next_run(session, asset.id, event.timestamp)
        return "recorded"


def keep_in_next_run(session: Any, asset_id: int, timestamp: datetime) -> None:
    """
    Make sure the DAG run that the scheduler creates next consumes the event recorded at ``timestamp``.

    Up to Airflow 3.3 the scheduler gives an asset-triggered run the events up to the
    ``created_at`` of the DAG's queue row (``asset_dag_run_queue``), which the first event since the
    last run sets and later events leave alone; then it deletes the row. A customer who writes
    between the first event and the run's creation is left out of that run, and of every run until
    someone else writes (apache/airflow#56050). So: move the row's time up to this event, and if
    the scheduler just deleted a row without consuming this event, queue the DAG again. Airflow
    versions whose queue rows name their events (apache/airflow#70972) need none of this.
    """
    from airflow.models.asset import AssetDagRunQueue, DagScheduleAssetReference
    from airflow.models.dag import DagModel
    from sqlalchemy import exc, select, update

    if not hasattr(AssetDagRunQueue, "created_at") or hasattr(AssetDagRunQueue, "asset_event_id"):
        return
    session.execute(
        update(AssetDagRunQueue)
        .where(AssetDagRunQueue.asset_id == asset_id, AssetDagRunQueue.created_at < timestamp)
        .values(created_at=timestamp)
        .execution_options(synchronize_session=False)
    )
    queued = set(
        session.scalars(select(AssetDagRunQueue.target_dag_id).where(AssetDagRunQueue.asset_id == asset_id))
    )
    consumers = session.scalars(
        select(DagModel.dag_id)
        .join(DagScheduleAssetReference, DagScheduleAssetReference.dag_id == DagModel.dag_id)
        .where(DagScheduleAssetReference.asset_id == asset_id, DagModel.is_paused.is_(False))
        .where(
            *(
                [DagModel.timetable_partitioned.is_not(True)]
                if hasattr(DagModel, "timetable_partitioned")
                else []
            )
        )
    )
    for dag_id in set(consumers) - queued:
        try:
            with session.begin_nested():
                session.add(AssetDagRunQueue(asset_id=asset_id, target_dag_id=dag_id, created_at=timestamp))
        except exc.IntegrityError:  # queued meanwhile by another event: that row covers this one too
            pass
