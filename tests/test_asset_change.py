"""
The contract with Airflow's internal ``asset_manager.register_asset_change`` that the receiver
relies on, checked against the installed Airflow.
"""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from airflow_provider_ahachat.events import ahachat_event

URI = "ahachat://contract_bot/order_status"


@pytest.fixture(autouse=True)
def followed(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, set[str]]]:
    """The assets (and DAGs) the adapter asks to follow; no follow-up thread runs in these tests."""
    from airflow_provider_ahachat.inbound import airflow_internals as asset_change

    watched: list[tuple[int, set[str]]] = []
    monkeypatch.setattr(
        asset_change.follow_up, "watch", lambda asset_id, dag_ids: watched.append((asset_id, set(dag_ids)))
    )
    return watched


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
    for name in ("asset", "extra", "session"):
        assert name in parameters, f"register_asset_change no longer takes {name}"
        assert parameters[name].kind is inspect.Parameter.KEYWORD_ONLY
    # source_is_api (the event comes from the API, not a task) came with teams, in Airflow 3.3;
    # before, the method takes and ignores other keywords, and has no teams to filter consumers by.
    if "source_is_api" in parameters:
        assert parameters["source_is_api"].kind is inspect.Parameter.KEYWORD_ONLY
    else:
        assert any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
        assert "api_user_teams" not in parameters


def test_an_event_is_recorded_and_queues_the_dag(
    scheduled: str, followed: list[tuple[int, set[str]]]
) -> None:
    from airflow_provider_ahachat.inbound.airflow_internals import record_asset_event

    assert record_asset_event(URI, {"messenger_user_id": "1", "fields": {"a": "b"}}, None) == "recorded"
    extras, queued = events_and_queue()
    assert extras[-1] == {"messenger_user_id": "1", "fields": {"a": "b"}}
    assert scheduled in queued
    assert [dag_ids for _, dag_ids in followed] == [{scheduled}]  # followed until a run takes it


def test_a_repeated_key_is_found_in_the_window_only(
    scheduled: str, followed: list[tuple[int, set[str]]]
) -> None:
    from airflow_provider_ahachat.inbound.airflow_internals import record_asset_event

    extra = {"messenger_user_id": "2", "idempotency_key": "contract-k"}
    assert record_asset_event(URI, extra, "contract-k") == "recorded"
    assert record_asset_event(URI, extra, "contract-k") == "duplicate"
    assert len(followed) == 1  # a repeat recorded nothing: nothing more to follow
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

    from airflow_provider_ahachat.inbound.airflow_internals import record_asset_event

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


def test_an_asset_no_dag_declares_is_not_created(
    airflow_db: Any, followed: list[tuple[int, set[str]]]
) -> None:
    from airflow_provider_ahachat.inbound.airflow_internals import record_asset_event

    assert record_asset_event("ahachat://contract_bot/nobody", {"messenger_user_id": "1"}, None) == "no_asset"
    assert followed == []


RACE_URI = "ahachat://contract_bot/race"


@pytest.fixture
def race_dag(airflow_db: Any) -> str:
    """An unpaused DAG scheduled on ``RACE_URI``, with no event, run or queue row yet."""
    from airflow.models.asset import AssetDagRunQueue, AssetEvent, AssetModel
    from airflow.models.dag import DagModel
    from airflow.models.dagrun import DagRun
    from airflow.sdk import DAG
    from airflow.sdk.bases.operator import BaseOperator
    from airflow.utils.session import create_session
    from airflow_harness import sync_dag_to_db
    from sqlalchemy import delete, select, update

    class Noop(BaseOperator):
        def execute(self, context: Any) -> None:
            return None

    with DAG("t_asset_race", schedule=[ahachat_event("race", ahachat_conn_id="contract_bot")]) as dag:
        Noop(task_id="noop")
    sync_dag_to_db(dag)
    with create_session() as session:
        session.execute(update(DagModel).where(DagModel.dag_id == dag.dag_id).values(is_paused=False))
        asset_id = session.scalar(select(AssetModel.id).where(AssetModel.uri == RACE_URI))
        session.execute(delete(AssetDagRunQueue).where(AssetDagRunQueue.target_dag_id == dag.dag_id))
        session.execute(delete(DagRun).where(DagRun.dag_id == dag.dag_id))
        session.execute(delete(AssetEvent).where(AssetEvent.asset_id == asset_id))
    return dag.dag_id


def race_state(dag_id: str) -> tuple[int, list[list[str]], list[Any]]:
    """The asset's ID, the customers of each run (oldest run first), the DAG's queue rows' times."""
    from airflow.models.asset import AssetDagRunQueue, AssetModel
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select
    from sqlalchemy.orm import selectinload

    with create_session() as session:
        asset_id = session.scalar(select(AssetModel.id).where(AssetModel.uri == RACE_URI))
        runs = session.scalars(
            select(DagRun)
            .where(DagRun.dag_id == dag_id)
            .options(selectinload(DagRun.consumed_asset_events))
            .order_by(DagRun.run_after)
        ).all()
        customers = [[e.extra["messenger_user_id"] for e in run.consumed_asset_events] for run in runs]
        queued = session.scalars(
            select(AssetDagRunQueue.created_at).where(AssetDagRunQueue.target_dag_id == dag_id)
        ).all()
        assert asset_id is not None
        return asset_id, customers, list(queued)


def create_run_as_the_scheduler(dag_id: str, meanwhile: Callable[[], Any] | None = None) -> Any:
    """
    Airflow's scheduler creates the DAG's asset-triggered run; ``meanwhile`` runs in another thread
    right after the scheduler has read the queue rows, and is awaited; what it returned.
    """
    from airflow.jobs.job import Job
    from airflow.jobs.scheduler_job_runner import SchedulerJobRunner
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    done: list[Any] = []

    def after_read(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        text = " ".join(statement.split())
        if meanwhile is None or done or "FROM asset_dag_run_queue" not in text:
            return
        if "ORDER BY asset_dag_run_queue.created_at DESC" not in text:
            return
        done.append(None)
        worker = threading.Thread(target=lambda: done.append(meanwhile()))
        worker.start()
        worker.join(60)

    runner = SchedulerJobRunner(job=Job())
    if "triggered_date_by_dag" in inspect.signature(runner._create_dag_runs_asset_triggered).parameters:
        # Airflow 3.1: the scheduler reads the queue rows first (dags_needing_dagruns), then
        # creates the run from the newest row's time, and deletes the rows. Its SQLite session
        # holds a read lock in between, so the write in between is made as on PostgreSQL, whose
        # reads lock out no writer: after the read, in another transaction.
        with create_session() as session:
            _, triggered_date_by_dag = DagModel.dags_needing_dagruns(session)
        if meanwhile is not None:
            done.append(None)
            worker = threading.Thread(target=lambda: done.append(meanwhile()))
            worker.start()
            worker.join(60)
        with create_session() as session:
            dag_model = session.get(DagModel, dag_id)
            assert dag_model is not None
            create_runs: Any = runner._create_dag_runs_asset_triggered  # its 3.1 signature
            create_runs(dag_models=[dag_model], triggered_date_by_dag=triggered_date_by_dag, session=session)
        assert meanwhile is None or len(done) == 2, "the late event was not recorded"
        return done[-1] if done else None
    event.listen(Engine, "after_cursor_execute", after_read)
    try:
        with create_session() as session:
            dag_model = session.get(DagModel, dag_id)
            assert dag_model is not None
            runner._create_dag_runs_asset_triggered(dag_models=[dag_model], session=session)
    finally:
        event.remove(Engine, "after_cursor_execute", after_read)
    assert meanwhile is None or len(done) == 2, "the scheduler never read the queue rows"
    return done[-1] if done else None


def test_an_event_recorded_while_the_scheduler_creates_a_run_gets_the_next_run(race_dag: str) -> None:
    """
    The scheduler reads the queue row, a customer writes, the scheduler creates the run from what it
    read and deletes the row: on a database without row locks (SQLite) the late event is in no run
    and nothing is queued for it. The follow-up queues it again, and the next run takes it.
    """
    from airflow.utils.session import create_session

    from airflow_provider_ahachat.inbound.airflow_internals import record_asset_event, requeue_stranded

    assert record_asset_event(RACE_URI, {"messenger_user_id": "1"}, None) == "recorded"
    late = create_run_as_the_scheduler(
        race_dag, lambda: record_asset_event(RACE_URI, {"messenger_user_id": "2"}, None)
    )
    assert late == "recorded"
    asset_id, customers, queued = race_state(race_dag)
    assert (customers, queued) == ([["1"]], []), "the race did not happen as on SQLite"

    with create_session() as session:  # a DAG no event was queued for is left alone
        assert requeue_stranded(session, asset_id, {"another_dag"}) is False
    assert race_state(race_dag)[2] == []
    with create_session() as session:
        assert requeue_stranded(session, asset_id, {race_dag}) is True
    _, _, queued = race_state(race_dag)
    assert len(queued) == 1

    create_run_as_the_scheduler(race_dag)
    _, customers, queued = race_state(race_dag)
    assert customers == [["1"], ["2"]]
    assert queued == []
    with create_session() as session:  # settled: nothing waits, nothing is queued again
        assert requeue_stranded(session, asset_id, {race_dag}) is False
    assert race_state(race_dag)[1:] == ([["1"], ["2"]], [])


@pytest.mark.parametrize(
    ("version", "active"), [("3.3.2", True), ("3.4.0rc1", False), ("3.4.0", False), ("3.5.1", False)]
)
def test_the_race_workaround_turns_itself_off_from_airflow_3_4(
    race_dag: str, monkeypatch: pytest.MonkeyPatch, version: str, active: bool
) -> None:
    """
    From Airflow 3.4.0 the scheduler's queue rows name their events (apache/airflow#70972): the
    workaround neither moves a queue row, nor queues a DAG, nor follows an event, by version alone.
    """
    import airflow

    from airflow_provider_ahachat.inbound import airflow_internals

    monkeypatch.setattr(airflow, "__version__", version)
    assert airflow_internals.queue_rows_are_time_windows() is active
    if not active:  # the tables are still 3.3's here: nothing of the workaround may touch them
        assert record_asset_event_and_queue(race_dag) == (set(), False)


def record_asset_event_and_queue(dag_id: str) -> tuple[set[str], bool]:
    """What the workaround does for one event: the DAGs it queued, and whether the follow-up waits."""
    from airflow.utils.session import create_session

    from airflow_provider_ahachat.inbound.airflow_internals import keep_in_next_run, requeue_stranded

    asset_id = race_state(dag_id)[0]
    with create_session() as session:
        queued = keep_in_next_run(session, asset_id, datetime.now(timezone.utc))
        waiting = requeue_stranded(session, asset_id, {dag_id})
        session.rollback()
    return queued, waiting


def test_the_follow_up_leaves_a_queued_or_taken_event_alone(race_dag: str) -> None:
    from airflow.utils.session import create_session

    from airflow_provider_ahachat.inbound.airflow_internals import record_asset_event, requeue_stranded

    assert record_asset_event(RACE_URI, {"messenger_user_id": "1"}, None) == "recorded"
    asset_id, _, queued = race_state(race_dag)
    with create_session() as session:  # queued and not taken yet: it waits, the row is not touched
        assert requeue_stranded(session, asset_id, {race_dag}) is True
    assert race_state(race_dag)[1:] == ([], queued)
    create_run_as_the_scheduler(race_dag)
    with create_session() as session:
        assert requeue_stranded(session, asset_id, {race_dag}) is False
    assert race_state(race_dag)[1:] == ([["1"]], [])


def test_a_paused_dag_is_not_queued_by_the_follow_up(
    race_dag: str, followed: list[tuple[int, set[str]]]
) -> None:
    """Airflow queues no event for a paused DAG, even once unpaused, and neither does the follow-up."""
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session
    from sqlalchemy import update

    from airflow_provider_ahachat.inbound.airflow_internals import record_asset_event, requeue_stranded

    def pause(paused: bool) -> None:
        with create_session() as session:
            session.execute(update(DagModel).where(DagModel.dag_id == race_dag).values(is_paused=paused))

    pause(True)
    assert record_asset_event(RACE_URI, {"messenger_user_id": "1"}, None) == "recorded"
    assert followed == []  # queued for no DAG: nothing to follow
    asset_id = race_state(race_dag)[0]
    with create_session() as session:
        assert requeue_stranded(session, asset_id, {race_dag}) is False
    pause(False)
    with create_session() as session:  # not among the DAGs the event was queued for
        assert requeue_stranded(session, asset_id, set()) is False
    assert race_state(race_dag)[1:] == ([], [])


def test_recorded_events_are_followed_until_nothing_waits() -> None:
    from airflow_provider_ahachat.inbound.airflow_internals import FollowUp

    waiting = {1: 2, 2: 0}  # asset -> rounds during which it still waits
    checked: list[tuple[int, frozenset[str]]] = []

    def check(asset_id: int, dag_ids: frozenset[str]) -> bool:
        checked.append((asset_id, dag_ids))
        if asset_id == 3:
            raise OSError("database is locked")
        waiting[asset_id] -= 1
        return waiting[asset_id] >= 0

    follow = FollowUp(check, interval=3600)
    follow.watch(1, {"a"})
    follow.watch(1, {"b"})  # a later event of the same asset, queued for another DAG
    follow.watch(2, {"a"})
    follow.watch(3, {"a"})
    follow.run_once()
    assert follow.watched() == {1: {"a", "b"}, 3: {"a"}}  # 2 settled; 3 could not be checked: kept
    follow.run_once()
    follow.run_once()
    assert follow.watched() == {3: {"a"}}
    assert sorted(checked) == [(1, {"a", "b"})] * 3 + [(2, {"a"})] + [(3, {"a"})] * 3
    expired = FollowUp(check, interval=3600, keep_for=timedelta(0))
    expired.watch(3, {"a"})
    expired.run_once()
    assert expired.watched() == {}


def test_an_event_recorded_during_a_check_is_checked_again() -> None:
    from airflow_provider_ahachat.inbound.airflow_internals import FollowUp

    def check(asset_id: int, dag_ids: frozenset[str]) -> bool:
        if asset_id == 1 and not checked:
            follow.watch(1, {"a"})  # recorded after the check's reads: not settled by them
        checked.append(asset_id)
        return False

    checked: list[int] = []
    follow = FollowUp(check, interval=3600)
    follow.watch(1, {"a"})
    follow.run_once()
    assert follow.watched() == {1: {"a"}}
    follow.run_once()
    assert follow.watched() == {}


def test_the_follow_up_thread_checks_and_stops() -> None:
    from airflow_provider_ahachat.inbound.airflow_internals import FollowUp

    rounds = threading.Semaphore(0)

    def check(asset_id: int, dag_ids: frozenset[str]) -> bool:
        rounds.release()
        return False

    follow = FollowUp(check, interval=0.01)
    follow.watch(7, {"a"})
    assert rounds.acquire(timeout=10)
    deadline = time.monotonic() + 10
    while follow.watched() or follow.running():
        assert time.monotonic() < deadline, "the follow-up thread did not stop"
        time.sleep(0.01)
