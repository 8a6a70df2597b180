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
        return "recorded" if event is not None else "no_asset"
