"""
Record an asset event from the API server process, as Airflow's ``POST /api/v2/assets/events`` does.

The only place that calls Airflow's internal ``asset_manager.register_asset_change``; its test
(``tests/test_asset_change.py``) checks the contract this relies on. Runs in a worker thread of the
API server, with its own database session; a daemon thread then follows each recorded event until a
DAG run has taken it (:class:`FollowUp`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow_provider_ahachat.events.receiver import IDEMPOTENCY_WINDOW, Outcome

log = logging.getLogger(__name__)

#: One repeated call at a time, so two retries that arrive together cannot both record.
_IDEMPOTENCY_LOCK = threading.Lock()
#: Seconds between two checks that the recorded events are queued for, or taken by, a DAG run.
FOLLOW_UP_INTERVAL = 5.0
#: How long an asset is followed after its last event was recorded here.
FOLLOW_UP_FOR = timedelta(hours=1)


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
        outcome, asset_id, queued_for = _record(uri, extra, None, window)
    else:
        with _IDEMPOTENCY_LOCK:
            outcome, asset_id, queued_for = _record(uri, extra, idempotency_key, window)
    if asset_id is not None and queued_for:
        follow_up.watch(asset_id, queued_for)
    return outcome


def _record(
    uri: str, extra: dict[str, Any], idempotency_key: str | None, window: timedelta
) -> tuple[Outcome, int | None, set[str]]:
    from airflow.assets.manager import asset_manager
    from airflow.models.asset import AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        asset = session.scalar(select(AssetModel).where(AssetModel.name == uri, AssetModel.uri == uri))
        if asset is None:
            return "no_asset", None, set()
        if idempotency_key is not None and seen_key(session, asset.id, idempotency_key, window):
            return "duplicate", asset.id, set()
        event = asset_manager.register_asset_change(
            asset=asset, extra=extra, session=session, source_is_api=True
        )
        if event is None:
            return "no_asset", None, set()
        return "recorded", asset.id, keep_in_next_run(session, asset.id, event.timestamp)


def seen_key(session: Any, asset_id: int, key: str, window: timedelta) -> bool:
    """
    Whether an event of the asset recorded within ``window`` carries ``extra["idempotency_key"] == key``.

    No stored value can make this fail: the database is not asked to parse any event's ``extra``
    (an event another writer stored with ``NaN``, say, is text the JSON functions of SQLite refuse,
    which would fail the look-up of every call; and Airflow 3.1 declares the column without ``[key]``
    at all). The database only compares the stored text with the key (:func:`may_hold_key`); the
    few rows that hold it are then read here, one at a time (:func:`holds_key`).
    """
    from airflow.models.asset import AssetEvent
    from sqlalchemy import Text, cast, select

    rows = session.execute(
        select(cast(AssetEvent.extra, Text)).where(
            AssetEvent.asset_id == asset_id,
            AssetEvent.timestamp >= datetime.now(timezone.utc) - window,
            may_hold_key(AssetEvent.extra, key),
        )
    )
    return any(holds_key(stored, key) for (stored,) in rows)


def may_hold_key(extra: Any, key: str) -> Any:
    """
    The SQL condition that the JSON column ``extra`` may hold ``key``: its text contains the key as
    JSON writes it (ASCII-escaped, as Airflow stores it, or not, as MySQL normalises it). The same
    on every Airflow release's declaration of the column and every database.
    """
    import json

    from sqlalchemy import Text, cast, or_

    text = cast(extra, Text)
    forms = {json.dumps(key, ensure_ascii=escaped)[1:-1] for escaped in (True, False)}
    return or_(*(text.contains(form, autoescape=True) for form in forms))


def holds_key(stored: Any, key: str) -> bool:
    """Whether a stored ``extra`` (its text, or what a driver decoded) has ``idempotency_key == key``."""
    import json

    try:
        extra = json.loads(stored) if isinstance(stored, str | bytes) else stored
    except ValueError:  # not JSON any reader takes: skipped, never an error
        return False
    return isinstance(extra, dict) and extra.get("idempotency_key") == key


def queue_rows_are_time_windows() -> bool:
    """
    Whether this Airflow's scheduler runs a DAG on the events up to its queue row's ``created_at``.

    True up to Airflow 3.3; versions whose queue rows name their events (apache/airflow#70972)
    lose no event to the races that :func:`keep_in_next_run` and :func:`requeue_stranded` mend.
    """
    from airflow.models.asset import AssetDagRunQueue

    return hasattr(AssetDagRunQueue, "created_at") and not hasattr(AssetDagRunQueue, "asset_event_id")


def keep_in_next_run(session: Any, asset_id: int, timestamp: datetime) -> set[str]:
    """
    Make sure the DAG run that the scheduler creates next consumes the event recorded at ``timestamp``.

    Up to Airflow 3.3 the scheduler gives an asset-triggered run the events up to the
    ``created_at`` of the DAG's queue row (``asset_dag_run_queue``), which the first event since the
    last run sets and later events leave alone; then it deletes the row. A customer who writes
    between the first event and the run's creation is left out of that run, and of every run until
    someone else writes (apache/airflow#56050). So: move the row's time up to this event, and if
    the scheduler just deleted a row without consuming this event, queue the DAG again. Airflow
    versions whose queue rows name their events (apache/airflow#70972) need none of this.

    :return: the DAGs the event is queued for (none on such versions), to follow up.
    """
    from airflow.models.asset import AssetDagRunQueue
    from sqlalchemy import select, update

    if not queue_rows_are_time_windows():
        return set()
    session.execute(
        update(AssetDagRunQueue)
        .where(AssetDagRunQueue.asset_id == asset_id, AssetDagRunQueue.created_at < timestamp)
        .values(created_at=timestamp)
        .execution_options(synchronize_session=False)
    )
    queued = set(
        session.scalars(select(AssetDagRunQueue.target_dag_id).where(AssetDagRunQueue.asset_id == asset_id))
    )
    consumers = set(_consumers(session, asset_id))
    for dag_id in consumers - queued:
        _queue(session, asset_id, dag_id, timestamp)
    return consumers


def _consumers(session: Any, asset_id: int) -> dict[str, datetime]:
    """The unpaused DAGs scheduled on the asset (not partition-aware), with when they subscribed."""
    from airflow.models.asset import DagScheduleAssetReference
    from airflow.models.dag import DagModel
    from sqlalchemy import select

    rows = session.execute(
        select(DagModel.dag_id, DagScheduleAssetReference.created_at)
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
    return {row[0]: row[1] for row in rows}


def _queue(session: Any, asset_id: int, dag_id: str, created_at: datetime) -> bool:
    """Add the DAG's queue row for the asset; False if one was added meanwhile (it covers this)."""
    from airflow.models.asset import AssetDagRunQueue
    from sqlalchemy import exc

    try:
        with session.begin_nested():
            session.add(AssetDagRunQueue(asset_id=asset_id, target_dag_id=dag_id, created_at=created_at))
    except exc.IntegrityError:
        return False
    return True


def requeue_stranded(session: Any, asset_id: int, dag_ids: Collection[str]) -> bool:
    """
    Queue again those of ``dag_ids`` for which events of the asset wait that no run will take.

    An event is waiting for a DAG scheduled on the asset when it is newer than the DAG's last
    asset-triggered run (the run takes the events up to its ``run_after``) and than the DAG's
    subscription to the asset. It will be taken only while the DAG has a queue row for the asset.
    Up to Airflow 3.3, the scheduler reads the row, creates the run from the events up to the time
    it read, then deletes the row; on a database without row locks (SQLite) an event recorded in
    between moves the row's time up and is deleted with it: recorded, acknowledged, and in no run
    until another customer writes. Such events get a new row here, dated at the newest of them.

    Only DAGs an event was queued for are queued again, and only while they are unpaused and still
    scheduled on the asset: as Airflow does, no run comes from events recorded while a DAG was
    paused.

    :param session: a session whose transaction is committed by the caller.
    :param asset_id: the asset.
    :param dag_ids: the DAGs the events were queued for when they were recorded.
    :return: whether events of the asset still wait for a run of one of them (follow it further).
    """
    from airflow.models.asset import AssetDagRunQueue, AssetEvent
    from airflow.models.dagrun import DagRun
    from airflow.utils.types import DagRunType
    from sqlalchemy import false, func, select, update

    if not queue_rows_are_time_windows():
        return False
    # A write first: on SQLite it takes the database's write lock, so that what is read below stays
    # true until this transaction ends (the scheduler cannot create a run or delete a row meanwhile).
    session.execute(
        update(AssetDagRunQueue)
        .where(AssetDagRunQueue.asset_id == asset_id, false())
        .values(created_at=AssetDagRunQueue.created_at)
        .execution_options(synchronize_session=False)
    )
    # The queue rows before the runs: a run created after this read is seen by the reads below.
    queued = dict(
        session.execute(
            select(AssetDagRunQueue.target_dag_id, AssetDagRunQueue.created_at).where(
                AssetDagRunQueue.asset_id == asset_id
            )
        ).all()
    )
    waiting = False
    for dag_id, subscribed in _consumers(session, asset_id).items():
        if dag_id not in dag_ids:
            continue
        last_run = session.scalar(
            select(func.max(DagRun.run_after)).where(
                DagRun.dag_id == dag_id, DagRun.run_type == DagRunType.ASSET_TRIGGERED
            )
        )
        since = max(t for t in (last_run, subscribed) if t is not None)
        newest = session.scalar(
            select(func.max(AssetEvent.timestamp)).where(
                AssetEvent.asset_id == asset_id, AssetEvent.timestamp > since
            )
        )
        if newest is None:
            continue
        waiting = True
        if dag_id in queued:
            if queued[dag_id] < newest:  # the row must cover the newest event (see keep_in_next_run)
                session.execute(
                    update(AssetDagRunQueue)
                    .where(
                        AssetDagRunQueue.asset_id == asset_id,
                        AssetDagRunQueue.target_dag_id == dag_id,
                        AssetDagRunQueue.created_at < newest,
                    )
                    .values(created_at=newest)
                    .execution_options(synchronize_session=False)
                )
            continue
        if _queue(session, asset_id, dag_id, newest):
            log.warning(
                "AhaChat webhook: events of asset %s recorded up to %s were in no run of %s and no "
                "longer queued for it (the scheduler removed the queue row while they were recorded); "
                "queued again",
                asset_id,
                newest.isoformat(),
                dag_id,
            )
    return waiting


class FollowUp:
    """
    Follows the assets that received events in this process until a DAG run has taken the events.

    A daemon thread, started with the first event and ended when nothing is left to follow, calls
    ``check(asset_id, dag_ids)`` every ``interval`` seconds for each asset; an asset is dropped when
    the check says nothing waits any more, or ``keep_for`` after its last event.

    :param check: checks one asset for the DAGs its events were queued for (in its own
        transaction); True while events still wait.
    :param interval: seconds between two rounds.
    :param keep_for: how long an asset is followed after its last event.
    """

    def __init__(
        self,
        check: Callable[[int, frozenset[str]], bool],
        *,
        interval: float = FOLLOW_UP_INTERVAL,
        keep_for: timedelta = FOLLOW_UP_FOR,
    ) -> None:
        self._check = check
        self.interval = interval
        self._keep_for = keep_for.total_seconds()
        # asset ID -> (time.monotonic() of its last event, the DAGs its events were queued for)
        self._assets: dict[int, tuple[float, frozenset[str]]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def watch(self, asset_id: int, dag_ids: Collection[str]) -> None:
        """Follow ``asset_id`` from now on (again), for ``dag_ids`` too."""
        with self._lock:
            _, before = self._assets.get(asset_id, (0.0, frozenset()))
            self._assets[asset_id] = (time.monotonic(), before | frozenset(dag_ids))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="ahachat-event-follow-up", daemon=True)
                self._thread.start()

    def running(self) -> bool:
        """Whether the thread is following assets now."""
        with self._lock:
            return self._thread is not None and self._thread.is_alive()

    def watched(self) -> dict[int, frozenset[str]]:
        """The assets followed now, and for which DAGs."""
        with self._lock:
            return {asset_id: dag_ids for asset_id, (_, dag_ids) in self._assets.items()}

    def run_once(self) -> None:
        """One round: check every followed asset, drop the settled and the expired ones."""
        with self._lock:
            followed = dict(self._assets)
        for asset_id, entry in followed.items():
            try:
                waiting = self._check(asset_id, entry[1])
            except Exception as err:  # the database is busy or down: try again next round
                log.warning("AhaChat webhook: could not follow up the events of asset %s: %s", asset_id, err)
                waiting = True
            with self._lock:
                if self._assets.get(asset_id) != entry:  # a new event came meanwhile: check it again
                    continue
                if not waiting or time.monotonic() - entry[0] > self._keep_for:
                    del self._assets[asset_id]

    def _run(self) -> None:
        while True:
            time.sleep(self.interval)
            self.run_once()
            with self._lock:
                if not self._assets:
                    self._thread = None
                    return


def _check_asset(asset_id: int, dag_ids: frozenset[str]) -> bool:
    from airflow.utils.session import create_session

    with create_session() as session:
        return requeue_stranded(session, asset_id, dag_ids)


#: The follow-up of the events recorded in this process.
follow_up = FollowUp(_check_asset)
