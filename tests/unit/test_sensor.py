"""UserSensor inside Airflow (``dag.test()``) in its three modes, against the sandbox over loopback."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from helpers.dag_helpers import CONN, new_dag, run_without_token
from helpers.paths import load_example_dag as example_dag
from helpers.sandbox_fixtures import user_lookups

from airflow_provider_ahachat.exceptions import AhaChatValidationError
from airflow_provider_ahachat.sandbox import SandboxServer
from airflow_provider_ahachat.sandbox.server import connection_uri

LAN = "3824547807572463"  # Nguyễn Thị Lan: tags khach_quen, vip, cho_giao_hang; wrote 30 minutes ago
MODES = ["poke", "reschedule", "deferrable"]

pytestmark = pytest.mark.usefixtures("airflow_db")


def sensor(mode: str, **kwargs: Any) -> Any:
    from airflow_provider_ahachat.sensors.ahachat import UserSensor

    kwargs.setdefault("task_id", "wait")
    kwargs.setdefault("poke_interval", 0.3)
    kwargs.setdefault("timeout", 30)
    if mode == "deferrable":
        return UserSensor(deferrable=True, **kwargs)
    return UserSensor(mode=mode, deferrable=False, **kwargs)


def run(dag_runner: Any, dag: Any, sandbox: SandboxServer, uri: str | None = None) -> Any:
    """Run ``dag``; the token appears nowhere: not in the log, the errors, nor XCom."""
    conns = {CONN: uri or sandbox.connection_uri + "?max_retries=0"}
    return run_without_token(dag_runner, dag, sandbox, conns)


@pytest.mark.parametrize("mode", MODES)
def test_succeeds_when_the_customer_answers_part_way(
    dag_runner: Any, sandbox: SandboxServer, after_lookups: Any, mode: str
) -> None:
    with new_dag(f"sensor_answers_{mode}") as dag:
        sensor(mode, user_id=LAN, attributes={"delivery_confirmed": "yes"}, absent_tags=["cho_giao_hang"])
    after_lookups(2, sandbox.update_user, LAN, attributes={"delivery_confirmed": "yes"})
    after_lookups(3, sandbox.update_user, LAN, remove_tags=["cho_giao_hang"])

    result = run(dag_runner, dag, sandbox)

    assert result.task_states == {"wait": "success"}, result.summary()
    user = result.xcoms["wait"]
    assert user["messenger_user_id"] == LAN
    assert user["attributes"]["delivery_confirmed"] == "yes"
    assert "cho_giao_hang" not in user["tags"]
    assert len(user_lookups(sandbox)) >= 4  # it checked, waited, and checked again
    if mode == "deferrable":
        assert "[DAG TEST] running trigger in line" in result.log
        # What the metadata database holds for the trigger: its arguments, and no token.
        from airflow.models.trigger import Trigger
        from airflow.utils.session import create_session

        with create_session() as session:
            rows = [(t.classpath, t.kwargs) for t in session.query(Trigger).all()]
        stored = [kwargs for classpath, kwargs in rows if classpath.endswith("ahachat.UserTrigger")]
        assert stored, rows
        assert stored[-1]["user_id"] == LAN
        assert stored[-1]["attributes"] == {"delivery_confirmed": "yes"}
        assert stored[-1]["ahachat_conn_id"] == CONN
        assert sandbox.token not in repr(rows)


@pytest.mark.parametrize("mode", MODES)
def test_times_out_when_the_customer_never_answers(
    dag_runner: Any, sandbox: SandboxServer, mode: str
) -> None:
    with new_dag(f"sensor_timeout_{mode}") as dag:
        sensor(mode, user_id=LAN, tags=["da_nhan_hang"], timeout=1)

    started = time.monotonic()
    result = run(dag_runner, dag, sandbox)

    assert result.task_states == {"wait": "failed"}, result.summary()
    assert type(result.tasks["wait"].error).__name__ == "AirflowSensorTimeout", result.tasks[
        "wait"
    ].error_text
    assert time.monotonic() - started < 15
    assert len(user_lookups(sandbox)) >= 2


@pytest.mark.parametrize("mode", ["poke", "deferrable"])
def test_soft_fail_skips_on_timeout(dag_runner: Any, sandbox: SandboxServer, mode: str) -> None:
    with new_dag(f"sensor_soft_fail_{mode}") as dag:
        sensor(mode, user_id=LAN, tags=["da_nhan_hang"], timeout=0.8, soft_fail=True)

    result = run(dag_runner, dag, sandbox)

    assert result.task_states == {"wait": "skipped"}, result.summary()


@pytest.mark.parametrize("mode", MODES)
def test_a_wrong_token_fails_at_once(dag_runner: Any, sandbox: SandboxServer, mode: str) -> None:
    with new_dag(f"sensor_wrong_token_{mode}") as dag:
        sensor(mode, user_id=LAN, attributes={"delivery_confirmed": "yes"}, soft_fail=True)

    started = time.monotonic()
    result = run(dag_runner, dag, sandbox, uri=connection_uri(sandbox.url, sandbox.bot_id, "e" * 64))

    # Failed, not skipped: soft_fail is for a customer who never answers, not for a broken connection.
    assert result.task_states == {"wait": "failed"}, result.summary()
    error = result.tasks["wait"].error
    assert type(error).__name__ == "AhaChatAuthError"
    assert "check the Bot ID and the Bot Token" in str(error)
    assert time.monotonic() - started < 10
    assert len(user_lookups(sandbox)) == 1


@pytest.mark.parametrize("mode", MODES)
def test_a_wrong_bot_id_fails_at_once(dag_runner: Any, sandbox: SandboxServer, mode: str) -> None:
    # AhaChat answers 404 for an unknown bot, as for a customer who is not there yet; the sensor
    # asks about the bot once rather than waiting for a customer it can never see.
    with new_dag(f"sensor_wrong_bot_{mode}") as dag:
        sensor(mode, user_id=LAN, soft_fail=True)

    started = time.monotonic()
    result = run(dag_runner, dag, sandbox, uri=connection_uri(sandbox.url, "99999999", sandbox.token))

    assert result.task_states == {"wait": "failed"}, result.summary()
    error = result.tasks["wait"].error
    assert type(error).__name__ == "AhaChatNotFoundError"
    assert "AhaChat knows no bot with this Bot ID" in str(error)
    assert time.monotonic() - started < 10


def stored_trigger_kwargs(dag_id: str) -> dict[str, Any]:
    """The arguments Airflow stored for the latest UserTrigger of ``dag_id``'s sensor."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.trigger import Trigger
    from airflow.utils.session import create_session

    with create_session() as session:
        ids = [ti.trigger_id for ti in session.query(TaskInstance).filter_by(dag_id=dag_id) if ti.trigger_id]
        rows = (
            session.query(Trigger).filter(Trigger.id.in_(ids)).all() if ids else session.query(Trigger).all()
        )
        stored = [t.kwargs for t in rows if t.classpath.endswith("ahachat.UserTrigger")]
    assert stored
    return dict(stored[-1])


def test_deferral_passes_on_interval_and_backoff(dag_runner: Any, sandbox: SandboxServer) -> None:
    with new_dag("sensor_backoff") as dag:
        sensor(
            "deferrable", user_id=LAN, tags=["da_nhan_hang"], timeout=1, exponential_backoff=True, max_wait=5
        )

    result = run(dag_runner, dag, sandbox)

    assert result.task_states == {"wait": "failed"}, result.summary()
    kwargs = stored_trigger_kwargs("sensor_backoff")
    assert (kwargs["poke_interval"], kwargs["exponential_backoff"], kwargs["max_wait"]) == (0.3, True, 5.0)


def test_reschedule_mode_gives_the_worker_back_between_checks(
    dag_runner: Any, sandbox: SandboxServer, after_lookups: Any
) -> None:
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.taskreschedule import TaskReschedule
    from airflow.utils.session import create_session

    with new_dag("sensor_reschedules") as dag:
        sensor("reschedule", user_id=LAN, attributes={"delivery_confirmed": "yes"})
    after_lookups(2, sandbox.update_user, LAN, attributes={"delivery_confirmed": "yes"})

    result = run(dag_runner, dag, sandbox)

    assert result.task_states == {"wait": "success"}, result.summary()
    with create_session() as session:
        ti = session.query(TaskInstance).filter_by(dag_id="sensor_reschedules", run_id=result.run_id).one()
        reschedules = session.query(TaskReschedule).filter(TaskReschedule.ti_id == ti.id).count()
    assert reschedules >= 1, "the sensor never handed its worker slot back"


def test_transient_failures_never_fail_it(
    dag_runner: Any, sandbox: SandboxServer, after_lookups: Any
) -> None:
    sandbox.configure(fail_next=[503, 429, 500])
    with new_dag("sensor_transient") as dag:
        sensor("poke", user_id=LAN, tags=["da_nhan_hang"], poke_interval=0.1)
    after_lookups(5, sandbox.update_user, LAN, add_tags=["da_nhan_hang"])

    result = run(dag_runner, dag, sandbox)

    assert result.task_states == {"wait": "success"}, result.summary()
    assert [r["status"] for r in user_lookups(sandbox)][:3] == [503, 429, 500]
    assert result.log.count("checking again at the next interval") == 3


def test_waits_for_a_customer_who_does_not_exist_yet(
    dag_runner: Any, sandbox: SandboxServer, after_lookups: Any
) -> None:
    new_user = {"messenger_user_id": "9990001112223334", "first_name": "Hoa", "phone": "+84977000111"}
    with new_dag("sensor_new_user") as dag:
        sensor("deferrable", phone="{{ params.phone }}", params={"phone": "0977 000 111"}, poke_interval=0.2)
    after_lookups(3, sandbox.add_user, new_user)

    result = run(dag_runner, dag, sandbox)

    assert result.task_states == {"wait": "success"}, result.summary()
    assert result.xcoms["wait"]["messenger_user_id"] == "9990001112223334"
    assert "no phone +84977000111 yet" in result.log


def test_check_callable_in_poke_mode(dag_runner: Any, sandbox: SandboxServer, after_lookups: Any) -> None:
    with new_dag("sensor_check") as dag:
        sensor(
            "poke",
            user_id=LAN,
            attributes={"points": None},
            check=lambda user: int(user.attributes["points"]) >= 100,
            poke_interval=0.2,
        )
    after_lookups(2, sandbox.update_user, LAN, attributes={"points": 20})
    after_lookups(4, sandbox.update_user, LAN, attributes={"points": 150})

    result = run(dag_runner, dag, sandbox)

    assert result.task_states == {"wait": "success"}, result.summary()
    assert result.xcoms["wait"]["attributes"]["points"] == 150
    assert "matches the conditions, but not yet the check" in result.log


def test_bad_input_is_refused_when_the_dag_is_written() -> None:
    with pytest.raises(AhaChatValidationError, match="wait: user_id, phone: give exactly one of them"):
        sensor("poke", user_id=LAN, phone="+84908071111")
    with pytest.raises(AhaChatValidationError, match="user_id, phone: give exactly one"):
        sensor("poke")
    with pytest.raises(AhaChatValidationError, match="check: a callable cannot run in the triggerer"):
        sensor("deferrable", user_id=LAN, check=lambda user: True)


def test_bad_templated_input_fails_before_any_request(dag_runner: Any, sandbox: SandboxServer) -> None:
    with new_dag("sensor_bad_input") as dag:
        sensor("deferrable", task_id="nested", user_id=LAN, attributes={"cart": {"items": 2}})
        sensor("poke", task_id="float_id", user_id="{{ params.id }}", params={"id": "3.8e15"})
        sensor("poke", task_id="both_tags", user_id=LAN, tags="vip", absent_tags='["vip"]')

    result = run(dag_runner, dag, sandbox)

    assert set(result.task_states.values()) == {"failed"}, result.summary()
    errors = {task_id: outcome.error_text or "" for task_id, outcome in result.tasks.items()}
    assert "attributes.cart: the wanted value must be a string" in errors["nested"]
    assert "user_id: must be a string of digits, got '3.8e15'" in errors["float_id"]
    assert "vip cannot be both required and forbidden" in errors["both_tags"]
    assert user_lookups(sandbox) == []


def test_an_error_event_from_the_trigger_fails_with_its_own_class() -> None:
    from airflow_provider_ahachat.exceptions import AhaChatAuthError

    waiting = sensor("deferrable", user_id=LAN)
    event = {
        "status": "error",
        "error": "AhaChatAuthError",
        "message": "AhaChat answered 401",
        "http_status": 401,
    }
    with pytest.raises(AhaChatAuthError, match="AhaChat answered 401") as caught:
        waiting.execute_complete({}, event)
    assert caught.value.status == 401
    with pytest.raises(Exception, match="KeyError: boom"):
        waiting.execute_complete({}, {"status": "error", "error": "KeyError", "message": "boom"})


def load_example_dag() -> Any:
    return example_dag("example_ahachat_confirm_delivery")


def test_the_confirm_delivery_example_runs_end_to_end(
    dag_runner: Any, sandbox: SandboxServer, after_lookups: Any
) -> None:
    dag = load_example_dag()
    dag.get_task("wait_for_confirmation").poke_interval = 0.2  # the example waits 5 minutes between checks

    # The customer taps "Đã nhận" once the sensor has looked twice: once on the worker, then in
    # the trigger.
    after_lookups(2, sandbox.update_user, LAN, run_block="delivery_received")
    result = dag_runner(dag, {"ahachat_sandbox": sandbox.connection_uri})

    assert result.succeeded, result.summary()
    broadcasts = [e for e in sandbox.outbox(LAN) if e["kind"] == "broadcast"]
    assert len(broadcasts) == 1
    assert broadcasts[0]["block_name"] == "confirm_delivery"
    assert broadcasts[0]["message_tag"] is None  # Lan wrote 30 minutes ago: no tag needed
    assert "DH10231" in json.dumps(broadcasts[0], ensure_ascii=False)
    lan = sandbox.user(LAN)
    assert lan["attributes"]["delivery_confirmed"] == "yes"
    assert "da_nhan_hang" in lan["tags"] and "cho_giao_hang" not in lan["tags"]
    assert result.xcoms["wait_for_confirmation"]["attributes"]["delivery_confirmed"] == "yes"
    assert "[DAG TEST] running trigger in line" in result.log
    result.assert_not_in_log(sandbox.token)
