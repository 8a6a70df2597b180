"""
The contract with Airflow's internal ``update_hitl_detail`` route function that the approvals
plugin relies on (``airflow_provider_ahachat.inbound.airflow_internals``), checked against the installed
Airflow: its parameters, that it records the answer as the user given and resumes a task waiting
for input, and the refusals the adapter makes before calling it.
"""

from __future__ import annotations

import inspect
import threading
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest

from airflow_provider_ahachat.inbound.airflow_internals import Answer

DAG_ID = "t_hitl_answer_contract"
APPROVER = "ahachat:6620193847561029"


def parked_state() -> str:
    """Where a task waits for its answer: ``awaiting_input`` from Airflow 3.3, ``deferred`` before."""
    from airflow.utils.state import TaskInstanceState

    return str(getattr(TaskInstanceState, "AWAITING_INPUT", TaskInstanceState.DEFERRED).value)


def answered_state() -> str:
    """
    The task's state once the answer is in: from Airflow 3.3 the answer resumes the task (the
    scheduler queues ``execute_complete`` next); before, the task stays deferred until its
    ``HITLTrigger`` reads the answer.
    """
    return "scheduled" if parked_state() == "awaiting_input" else "deferred"


@pytest.fixture(scope="module")
def serialized_dag(airflow_db: Any) -> Any:
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.providers.standard.operators.hitl import HITLOperator
    from airflow.sdk import DAG
    from helpers.airflow_harness import sync_dag_to_db

    with DAG(DAG_ID, schedule=None) as dag:
        HITLOperator(
            task_id="ask",
            subject="Refund?",
            options=["Approve", "Reject"],
            assigned_users=[{"id": APPROVER, "name": APPROVER}],
        )
    sync_dag_to_db(dag)
    return SerializedDagModel.get_dag(DAG_ID)


@pytest.fixture
def waiting(serialized_dag: Any) -> Answer:
    """A run whose task waits for input, with its HITL request written as the operator writes it."""
    from airflow._shared.timezones import timezone
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunTriggeredByType, DagRunType
    from sqlalchemy import select

    run_id = f"contract_{uuid.uuid4().hex[:8]}"
    with create_session() as session:
        serialized_dag.create_dagrun(
            run_id=run_id,
            run_after=timezone.utcnow(),
            run_type=DagRunType.MANUAL,
            triggered_by=DagRunTriggeredByType.TEST,
            state=DagRunState.RUNNING,
            session=session,
        )
        session.flush()
        ti = session.scalar(select(TaskInstance).where(TaskInstance.run_id == run_id))
        assert ti is not None
        ti.state = parked_state()
        ti.try_number = 1
        session.add(
            HITLDetail(
                ti_id=ti.id,
                options=["Approve", "Reject"],
                subject="Refund?",
                body=None,
                defaults=None,
                multiple=False,
                params={},
                assignees=[{"id": APPROVER, "name": APPROVER}],
            )
        )
    answer = Answer(DAG_ID, run_id, "ask", -1, 1, "Approve", APPROVER, APPROVER)
    park(answer, parked_state(), seconds_ago=3600)  # long settled, unless a test parks it again
    return answer


def park(answer: Answer, state: str, seconds_ago: float = 0.0) -> None:
    """Put the task instance in ``state``, as last changed ``seconds_ago`` (as the worker parks it)."""
    from airflow._shared.timezones import timezone
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import update

    with create_session() as session:
        session.execute(
            update(TaskInstance)
            .where(TaskInstance.run_id == answer.run_id)
            .values(state=state, updated_at=timezone.utcnow() - timedelta(seconds=seconds_ago))
        )


def state_of(answer: Answer) -> tuple[Any, Any, Any]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select
    from sqlalchemy.orm import joinedload

    with create_session() as session:
        ti = session.scalar(
            select(TaskInstance)
            .where(TaskInstance.run_id == answer.run_id)
            .options(joinedload(TaskInstance.hitl_detail))
        )
        assert ti is not None
        detail = ti.hitl_detail
        return str(ti.state), detail.chosen_options, detail.responded_by


def test_update_hitl_detail_takes_what_the_adapter_passes(airflow_db: Any) -> None:
    from airflow.api_fastapi.core_api.routes.public.hitl import update_hitl_detail

    parameters = inspect.signature(update_hitl_detail).parameters
    for name in (
        "dag_id",
        "dag_run_id",
        "task_id",
        "update_hitl_detail_payload",
        "user",
        "session",
        "map_index",
    ):
        assert name in parameters, f"update_hitl_detail no longer takes {name}"


def test_an_answer_is_recorded_as_the_approver_and_resumes_the_task(waiting: Answer) -> None:
    from airflow_provider_ahachat.inbound.airflow_internals import record_hitl_answer

    assert record_hitl_answer(waiting) == "recorded"
    state, chosen, by = state_of(waiting)
    assert state == answered_state()
    assert (chosen, by) == (["Approve"], {"id": APPROVER, "name": APPROVER})
    assert record_hitl_answer(waiting) == "answered"
    assert record_hitl_answer(Answer(**{**waiting.__dict__, "option": "Reject"})) == "answered"
    assert state_of(waiting)[1] == ["Approve"]


@pytest.mark.parametrize(
    ("change", "outcome"),
    [
        ({"try_number": 2}, "earlier_try"),
        ({"try_number": 0}, "earlier_try"),
        ({"user_id": "ahachat:1", "user_name": "ahachat:1"}, "not_assigned"),
        ({"option": "Maybe"}, "bad_option"),
        ({"task_id": "nope"}, "no_question"),
        ({"map_index": 3}, "no_question"),
    ],
)
def test_a_refused_answer_records_nothing(waiting: Answer, change: dict[str, Any], outcome: str) -> None:
    from airflow_provider_ahachat.inbound.airflow_internals import record_hitl_answer

    assert record_hitl_answer(Answer(**{**waiting.__dict__, **change})) == outcome
    assert state_of(waiting) == (parked_state(), None, None)


@pytest.mark.parametrize(
    ("change", "outcome"),
    [
        ({"user_id": "ahachat:1", "user_name": "ahachat:1"}, "not_assigned"),
        ({"user_id": "ahachat:2", "user_name": "ahachat:2"}, "not_assigned"),
        ({"option": "Maybe"}, "bad_option"),
        ({"option": ""}, "bad_option"),
    ],
)
@pytest.mark.parametrize("state", ["running", "parked just now", "failed"])
def test_a_tap_that_could_never_be_taken_is_refused_at_once_whatever_the_task_is_doing(
    waiting: Answer, change: dict[str, Any], outcome: str, state: str
) -> None:
    from airflow_provider_ahachat.inbound.airflow_internals import record_hitl_answer

    # Who may answer and the options are fixed when the question is asked: such a tap neither
    # waits for the task to park (it would answer "unavailable", tap again) nor tells of its state.
    park(waiting, parked_state() if state == "parked just now" else state)
    assert record_hitl_answer(Answer(**{**waiting.__dict__, **change}), settle=30, max_hold=0.5) == outcome
    assert state_of(waiting)[1:] == (None, None)


def test_a_tap_on_a_task_parked_just_now_waits_until_it_has_settled(waiting: Answer) -> None:
    from airflow_provider_ahachat.inbound.airflow_internals import record_hitl_answer

    park(waiting, parked_state())
    started = time.monotonic()
    assert record_hitl_answer(waiting, settle=1.5) == "recorded"
    assert time.monotonic() - started >= 1.2  # the park was a moment before ``started``
    assert state_of(waiting) == (answered_state(), ["Approve"], {"id": APPROVER, "name": APPROVER})


def test_a_tap_that_comes_before_the_task_parks_waits_for_the_park(waiting: Answer) -> None:
    from airflow_provider_ahachat.inbound.airflow_internals import record_hitl_answer

    park(waiting, "running")  # the question is out; the worker has not parked the task yet
    outcome: list[str] = []
    tap = threading.Thread(
        target=lambda: outcome.append(record_hitl_answer(waiting, settle=0.5, max_hold=30))
    )
    tap.start()
    time.sleep(1.0)
    assert tap.is_alive() and state_of(waiting) == ("running", None, None)  # nothing recorded while running
    park(waiting, parked_state())
    tap.join(30)
    assert outcome == ["recorded"]
    assert state_of(waiting)[:2] == (answered_state(), ["Approve"])


def test_a_task_that_does_not_park_in_time_records_nothing(waiting: Answer) -> None:
    from airflow_provider_ahachat.inbound.airflow_internals import record_hitl_answer

    park(waiting, "running")
    assert record_hitl_answer(waiting, settle=0.5, max_hold=0.6) == "unavailable"
    assert state_of(waiting) == ("running", None, None)
    park(waiting, parked_state(), seconds_ago=0.4)
    assert record_hitl_answer(waiting, settle=30, max_hold=0.6) == "unavailable"
    assert state_of(waiting) == (parked_state(), None, None)


def test_the_settling_time_follows_the_workers_heartbeat_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider_ahachat.inbound.airflow_internals import SCHEDULER_MARGIN, settle_seconds

    assert settle_seconds() == 5 + SCHEDULER_MARGIN  # Airflow's default
    monkeypatch.setenv("AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL", "11")
    assert settle_seconds() == 11 + SCHEDULER_MARGIN


def set_ti(answer: Answer, **values: Any) -> None:
    """Set columns of the task instance, as last changed when it was parked (so it stays settled)."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import update

    with create_session() as session:
        kept = {"updated_at": TaskInstance.updated_at}  # else ``onupdate`` makes it "parked just now"
        session.execute(
            update(TaskInstance).where(TaskInstance.run_id == answer.run_id).values(**kept, **values)
        )


@pytest.mark.parametrize(
    ("state", "outcome"), [("failed", "closed"), ("success", "closed"), ("skipped", "closed")]
)
def test_a_task_that_no_longer_waits_takes_no_answer(waiting: Answer, state: str, outcome: str) -> None:
    from airflow_provider_ahachat.inbound.airflow_internals import record_hitl_answer

    park(waiting, state, seconds_ago=3600)
    assert record_hitl_answer(waiting) == outcome
    assert state_of(waiting) == (state, None, None)
    park(waiting, parked_state(), seconds_ago=3600)
    assert record_hitl_answer(waiting) == "recorded"  # the same answer while it waits


@pytest.mark.parametrize("where", ["the task instance's timeout", "the question's deadline", "both"])
def test_past_its_deadline_a_waiting_task_takes_no_answer(waiting: Answer, where: str) -> None:
    from airflow._shared.timezones import timezone

    from airflow_provider_ahachat.inbound.airflow_internals import record_hitl_answer

    past, future = timezone.utcnow() - timedelta(seconds=1), timezone.utcnow() + timedelta(hours=1)
    ti_timeout = past if where != "the question's deadline" else future
    deadline = past if where != "the task instance's timeout" else future
    set_ti(waiting, trigger_timeout=ti_timeout)
    late = Answer(**{**waiting.__dict__, "deadline": deadline})
    assert record_hitl_answer(late) == "expired"
    assert state_of(waiting) == (parked_state(), None, None)
    park(waiting, "failed", seconds_ago=3600)  # then the scheduler's sweep fails it
    assert record_hitl_answer(late) == "expired"
    # Before both deadlines, it is answered.
    park(waiting, parked_state(), seconds_ago=3600)
    set_ti(waiting, trigger_timeout=future)
    assert record_hitl_answer(Answer(**{**waiting.__dict__, "deadline": future})) == "recorded"


def test_a_questions_record_is_read_from_the_task_instances_xcom(waiting: Answer) -> None:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    from airflow_provider_ahachat.inbound.airflow_internals import read_question
    from airflow_provider_ahachat.inbound.tokens import Question

    question = Question.new("shop_a", 1, 2_000_000_000)
    where = (waiting.dag_id, waiting.run_id, waiting.task_id, waiting.map_index)
    assert read_question(*where, "shop_a") is None
    with create_session() as session:
        XComModel.set(
            key=question.xcom_key,
            value=question.to_json(),
            dag_id=waiting.dag_id,
            run_id=waiting.run_id,
            task_id=waiting.task_id,
            map_index=waiting.map_index,
            session=session,
        )
        XComModel.set(
            key="ahachat_question.shop_b",
            value={"nonce": "not a record"},
            dag_id=waiting.dag_id,
            run_id=waiting.run_id,
            task_id=waiting.task_id,
            map_index=waiting.map_index,
            session=session,
        )
    assert read_question(*where, "shop_a") == question
    assert read_question(*where, "shop_b") is None  # unreadable: no question
    assert read_question(waiting.dag_id, waiting.run_id, waiting.task_id, 0, "shop_a") is None
