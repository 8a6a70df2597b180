"""
Every call the inbound code makes into Airflow's internals, in one module: what it relies on, and
the Airflow releases it was checked against (3.1.8, 3.2.2 and 3.3.2, the releases
``scripts/test-airflow.sh`` runs the tests on; 3.3.2 is what ``uv.lock`` pins).

Each group has its test, which checks the contract it relies on, on the installed release:

- **Asset events** (``tests/unit/test_asset_change.py``): ``asset_manager.register_asset_change`` (as
  ``POST /api/v2/assets/events`` records an event), the ``AssetModel``, ``AssetEvent``,
  ``AssetDagRunQueue``, ``DagScheduleAssetReference``, ``DagModel`` and ``DagRun`` tables, and
  ``create_session``. Up to 3.3 the scheduler takes a queue row's events by time, and can leave an
  event in no run (apache/airflow#56050, still open; the races are described at
  :func:`keep_in_next_run` and :func:`requeue_stranded`); the workaround waits for
  apache/airflow#70972 and turns itself off from Airflow 3.4.0, decided by version.
- **Human-in-the-loop answers** (``tests/unit/test_hitl_answer.py``): the route function
  ``update_hitl_detail`` of ``PATCH .../hitlDetails``, its ``UpdateHITLDetailPayload`` and the
  ``BaseUser`` it reads, the ``HITLDetail``, ``TaskInstance`` and ``XComModel`` tables; see
  :func:`record_hitl_answer`.
- **Connections**: ``Connection.get_connection_from_secrets`` (secrets backends, environment, the
  database), read by the plugin for each call (:func:`read_connection`).
- **The connection Test route** (``tests/unit/test_connection_test_button.py``): its ``_same_endpoint``
  comparison, asked whether it still takes a port of 0 for another destination (fixed by
  apache/airflow#73298): :func:`connection_test_route_refuses_port_0`.

Everything here runs in Airflow's API server, in worker threads, with its own database sessions.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Literal

from airflow_provider_ahachat.inbound.receiver import IDEMPOTENCY_WINDOW, Outcome
from airflow_provider_ahachat.version_compat import hitl_waiting_states

if TYPE_CHECKING:
    from airflow_provider_ahachat.inbound.tokens import Question

log = logging.getLogger(__name__)


#: The Airflow release whose asset queue rows name their events (apache/airflow#70972).
QUEUE_ROWS_NAME_THEIR_EVENTS = "3.4.0"


# --------------------------------------------------------------------------- connections


def read_connection(conn_id: str) -> Any:
    """The connection ``conn_id`` as Airflow's API server reads it, None if there is none."""
    from airflow.exceptions import AirflowNotFoundException
    from airflow.models.connection import Connection

    try:
        return Connection.get_connection_from_secrets(conn_id)
    except AirflowNotFoundException:
        return None


# --------------------------------------------------------------------------- the connection Test route


def connection_test_route_refuses_port_0() -> bool:
    """
    Whether this Airflow's connection Test route takes ``port: 0`` for a port other than a stored
    ``NULL`` (Airflow 3.3.0 to 3.3.2; fixed by apache/airflow#73298).

    Asked of the route's own comparison, so the answer follows the installed Airflow, whatever its
    version: False once it treats 0 as no port, and False where the route has no such comparison
    (before 3.3, or after a rewrite this module does not know).
    """
    try:
        from airflow.api_fastapi.core_api.routes.public.connections import _same_endpoint
    except ImportError:
        return False
    try:
        return not _same_endpoint(0, None)
    except Exception:
        return False


# --------------------------------------------------------------------------- asset events


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
        outcome, asset_id, queued_for = _record_event(uri, extra, None, window)
    else:
        with _IDEMPOTENCY_LOCK:
            outcome, asset_id, queued_for = _record_event(uri, extra, idempotency_key, window)
    if asset_id is not None and queued_for:
        follow_up.watch(asset_id, queued_for)
    return outcome


def _record_event(
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
    Whether this Airflow's scheduler runs a DAG on the events up to its queue row's ``created_at``:
    up to Airflow 3.3. From 3.4.0 the queue rows name their events (apache/airflow#70972, whose
    migration is 3.4.0's), so no event is lost to the races that :func:`keep_in_next_run` and
    :func:`requeue_stranded` mend, and both turn themselves off.
    """
    from airflow_provider_ahachat.version_compat import airflow_at_least

    return not airflow_at_least(QUEUE_ROWS_NAME_THEIR_EVENTS)


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


# --------------------------------------------------------------------------- Human-in-the-loop answers
#
# Record a Human-in-the-loop answer from the API server process, as Airflow's
# ``PATCH /api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}/hitlDetails`` does.
#
# The only place that calls Airflow's internal ``update_hitl_detail`` route function, and that reads
# a question's record (the XCom the notifier wrote, :func:`read_question`); its test
# (``tests/unit/test_hitl_answer.py``) checks the contract this relies on: the function's parameters, the
# user object it reads, the refusals it raises, and that it resumes the waiting task. Called
# directly, the route skips its DAG permission check and its audit log row, and does not commit: the
# checks that matter here are made below, in the same transaction, from the task instance itself:
# it waits for input (:func:`~airflow_provider_ahachat.version_compat.hitl_waiting_states`), on the
# try that asked, before its deadline (the response timeout Airflow set on the task instance, and the
# one the task recorded with its question), unanswered, and the user is among the assigned users.
# The answer's audit line is written by the caller. Runs in a worker thread of the API server.
#
# An answer resumes the task only once the task has been parked for a while (see
# :func:`settle_seconds`). The worker process that parked the task reports its exit to the scheduler as
# a success of the same try; Airflow 3.3's scheduler fails a resumed task instance that it has already
# queued (or started) again when that stale report arrives after the resume ("finished with state
# success, but the task instance's state attribute is queued"; apache/airflow issues 67287 and 72716).
# The question reaches Messenger just before the task parks, so a quick tap would otherwise resume it
# within that window. A tap that comes earlier waits (at most :data:`MAX_HOLD` seconds) instead.
# This waits for a fix of those issues; none is in the releases checked here, so it applies on all.

#: ``recorded``, or why nothing was: no such task instance or question, a later try is running,
#: an answer is already in, the task no longer waits for one (failed, succeeded, skipped...), its
#: deadline has passed, the user is not among the assigned users, no such option, or the task did
#: not park in time for the answer to resume it safely (the person is asked to tap again).
AnswerOutcome = Literal[
    "recorded",
    "no_question",
    "earlier_try",
    "answered",
    "closed",
    "expired",
    "not_assigned",
    "bad_option",
    "unavailable",
]

#: Seconds, beyond the worker's own delay, for the scheduler to read a reaped worker's exit: one pass
#: of its loop, which reads the executor's results every pass (about a second when busy).
SCHEDULER_MARGIN = 2.0
#: The longest a tap waits for its task to park and settle. AhaChat gives the button's URL about ten
#: seconds to answer; past this the person reads "try again" rather than nothing.
MAX_HOLD = 9.0
#: How often a waiting tap looks at the task instance again.
_POLL = 0.25

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
    :param deadline: the response deadline the task recorded with its question, if any (the one
        Airflow keeps on the task instance applies as well).
    """

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    try_number: int
    option: str
    user_id: str
    user_name: str
    deadline: datetime | None = None


def _user(user_id: str, user_name: str) -> Any:
    from airflow.api_fastapi.auth.managers.models.base_user import BaseUser

    class AhaChatApprover(BaseUser):
        """The Messenger user answering, as Airflow's HITL route reads a user."""

        def get_id(self) -> str:
            return user_id

        def get_name(self) -> str:
            return user_name

    return AhaChatApprover()


def settle_seconds() -> float:
    """
    How long a task must have been parked before an answer may resume it: ``[workers]
    min_heartbeat_interval`` (the longest the task's supervisor waits in ``select`` before it sees
    its task process gone, 5 s by default) plus :data:`SCHEDULER_MARGIN`.
    """
    from airflow_provider_ahachat.version_compat import conf

    return float(conf().getfloat("workers", "min_heartbeat_interval", fallback=5)) + SCHEDULER_MARGIN


def record_hitl_answer(
    answer: Answer,
    *,
    settle: float | None = None,
    max_hold: float = MAX_HOLD,
    sleep: Callable[[float], None] = time.sleep,
) -> AnswerOutcome:
    """
    Record ``answer`` on the task instance's HITL request and resume the task, if the task still
    waits for it: the question of that try, before its deadline, unanswered, and the user among its
    assigned users.

    An answer to a task that is not parked yet, or was parked less than ``settle`` seconds ago,
    waits until it is (see the module's docstring), at most ``max_hold`` seconds: then it records
    nothing and the outcome is ``unavailable``.

    :param answer: what to record.
    :param settle: seconds the task must have been parked; :func:`settle_seconds` by default.
    :param max_hold: the longest to wait, in seconds.
    :param sleep: how to wait.
    :return: ``recorded``, or the reason nothing was.
    """
    settle = settle_seconds() if settle is None else settle
    deadline = time.monotonic() + max_hold
    while (wait := _until_settled(answer, settle)) > 0:
        if time.monotonic() + min(wait, _POLL) > deadline:
            return "unavailable"
        sleep(min(wait, _POLL))
    with _ANSWER_LOCK:
        return _record_answer(answer)


def _until_settled(answer: Answer, settle: float) -> float:
    """Seconds to wait before ``answer`` may resume its task; 0 when it may (or will be refused)."""
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        row = session.execute(
            select(TaskInstance.state, TaskInstance.try_number, TaskInstance.updated_at, HITLDetail)
            .join(HITLDetail, HITLDetail.ti_id == TaskInstance.id)
            .where(
                TaskInstance.dag_id == answer.dag_id,
                TaskInstance.run_id == answer.run_id,
                TaskInstance.task_id == answer.task_id,
                TaskInstance.map_index == answer.map_index,
            )
        ).first()
        if row is None or row.try_number != answer.try_number or row.HITLDetail.responded_at is not None:
            return 0.0  # refused below: no question, another try, already answered
        # The whole record, not its columns: ``assigned_users`` is computed, and differs by release.
        detail = row.HITLDetail
        if _not_theirs(detail.assigned_users, detail.options, answer) is not None:
            return 0.0  # refused below at once, whatever the task's state: no need to wait for it
    state = str(getattr(row.state, "value", row.state))
    if state == "running":  # the question is out, the task parks next
        return _POLL
    if state not in hitl_waiting_states() or row.updated_at is None:
        return 0.0
    parked_for = (datetime.now(timezone.utc) - row.updated_at).total_seconds()
    return max(0.0, settle - parked_for)


def _record_answer(answer: Answer) -> AnswerOutcome:
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
        refusal = _refusal(ti, answer)
        if refusal is not None:
            return refusal
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


def _refusal(ti: Any, answer: Answer) -> AnswerOutcome | None:
    """Why the task instance cannot take ``answer`` now, from its own state; None if it can."""
    if ti is None or ti.hitl_detail is None:
        return "no_question"
    if ti.try_number != answer.try_number:
        return "earlier_try"
    detail = ti.hitl_detail
    not_theirs = _not_theirs(detail.assigned_users, detail.options, answer)
    if not_theirs is not None:
        return not_theirs
    if detail.response_received:
        return "answered"
    deadlines = [d for d in (getattr(ti, "trigger_timeout", None), answer.deadline) if d is not None]
    past_deadline = bool(deadlines) and datetime.now(timezone.utc) >= min(deadlines)
    if str(getattr(ti.state, "value", ti.state)) not in hitl_waiting_states():
        return "expired" if past_deadline else "closed"
    if past_deadline:
        return "expired"  # the scheduler has not swept it yet; the deadline has passed all the same
    return None


def _not_theirs(assigned_users: Any, options: Any, answer: Answer) -> AnswerOutcome | None:
    """
    ``not_assigned`` or ``bad_option`` when the answer could never be taken, whatever the task's
    state: these are fixed when the question is asked, so such a tap is refused at once, without
    waiting for the task to park, and says nothing of the task to someone it was not asked.
    """
    if answer.user_id not in {user["id"] for user in assigned_users or []}:
        return "not_assigned"
    if answer.option not in (options or []):
        return "bad_option"
    return None


def read_question(dag_id: str, run_id: str, task_id: str, map_index: int, conn_id: str) -> Question | None:
    """
    The record of the question the task instance asked through ``conn_id``: the XCom
    ``ahachat_question.<conn_id>`` its notifier wrote (tasks write XComs through the Execution API;
    a tap cannot). None if there is none, or it cannot be read.
    """
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from airflow_provider_ahachat.inbound.tokens import QUESTION_XCOM_PREFIX, Question

    with create_session() as session:
        row = session.scalar(
            select(XComModel).where(
                XComModel.dag_id == dag_id,
                XComModel.run_id == run_id,
                XComModel.task_id == task_id,
                XComModel.map_index == map_index,
                XComModel.key == f"{QUESTION_XCOM_PREFIX}{conn_id}",
            )
        )
        if row is None:
            return None
        try:
            value = XComModel.deserialize_value(row)
        except Exception:  # a value another XCom backend keeps elsewhere: no question we can check
            return None
    return Question.from_json(value)
