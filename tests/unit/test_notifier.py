"""AhaChatNotifier inside Airflow (``dag.test()``) on task and DAG callbacks, against the sandbox."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from airflow_provider_ahachat.exceptions import AhaChatValidationError
from airflow_provider_ahachat.sandbox import SandboxServer
from airflow_provider_ahachat.sandbox.server import connection_uri

LAN = "3824547807572463"  # Nguyễn Thị Lan: wrote 30 minutes ago
MAI = "6620193847561029"  # Mai: wrote 5 minutes ago
BAO = "5310298476123984"  # Phạm Quốc Bảo: last wrote 3 days ago, outside the 24-hour window
CONN = "aha_alerts"

pytestmark = pytest.mark.usefixtures("airflow_db")


def notifier(**kwargs: Any) -> Any:
    from airflow_provider_ahachat.notifications.ahachat import AhaChatNotifier

    kwargs.setdefault("ahachat_conn_id", CONN)
    return AhaChatNotifier(**kwargs)


def failing_dag(dag_id: str, *, task_callbacks: dict[str, Any] | None = None, **dag_kwargs: Any) -> Any:
    from airflow.sdk import DAG, task

    with DAG(dag_id, schedule=None, default_args={"retries": 0}, **dag_kwargs) as dag:

        @task(task_id="load_orders", **(task_callbacks or {}))
        def load_orders() -> None:
            raise ValueError("kho dữ liệu không phản hồi")

        load_orders()
    return dag


def run(dag_runner: Any, dag: Any, sandbox: SandboxServer, uri: str | None = None) -> Any:
    result = dag_runner(dag, {CONN: uri or sandbox.connection_uri})
    result.assert_not_in_log(sandbox.token)
    return result


def texts(sandbox: SandboxServer, user_id: str) -> list[str]:
    return [json.dumps(entry, ensure_ascii=False) for entry in sandbox.outbox(user_id)]


def exception_in_dag_test_context() -> bool:
    """
    Whether ``dag.test()`` puts ``exception`` in a failure callback's context. Checked: 3.3.2 does;
    3.1.8 sets it only in the real task runner (``task_runner.main``), which ``dag.test()`` bypasses.
    """
    from airflow import __version__

    return tuple(int(part) for part in __version__.split(".")[:2]) >= (3, 3)


def assert_failed_with_the_original_error(result: Any) -> None:
    assert result.task_states == {"load_orders": "failed"}, result.summary()
    assert result.tasks["load_orders"].error_text == "ValueError: kho dữ liệu không phản hồi"
    assert result.state == "failed"


def test_task_failure_sends_the_rendered_text_once(dag_runner: Any, sandbox: SandboxServer) -> None:
    alert = notifier(
        user_ids=[LAN, "{{ params.on_call }}"],
        text="❌ {{ dag.dag_id }}.{{ ti.task_id }} thất bại: {{ exception }}",
    )
    dag = failing_dag(
        "notify_task_failure", task_callbacks={"on_failure_callback": alert}, params={"on_call": MAI}
    )

    result = run(dag_runner, dag, sandbox)

    assert_failed_with_the_original_error(result)
    for user_id in (LAN, MAI):
        (entry,) = sandbox.outbox(user_id)
        assert entry["kind"] == "text"
        sent = json.dumps(entry, ensure_ascii=False)
        if exception_in_dag_test_context():
            assert "❌ notify_task_failure.load_orders thất bại: kho dữ liệu không phản hồi" in sent
        else:
            assert "❌ notify_task_failure.load_orders thất bại: None" in sent
    assert "AhaChat: notified 2 of 2 recipients" in result.log


def test_a_broadcast_block_reaches_people_inside_the_window_and_names_the_others(
    dag_runner: Any, sandbox: SandboxServer
) -> None:
    alert = notifier(
        user_ids=BAO,
        phones=["0908 071 111"],
        block_name="shipping_update",
        attributes={"order_id": "{{ dag.dag_id }}", "tracking_number": "{{ ti.task_id }}"},
    )
    dag = failing_dag("notify_block", task_callbacks={"on_failure_callback": alert})

    result = run(dag_runner, dag, sandbox)

    assert_failed_with_the_original_error(result)
    (entry,) = sandbox.outbox(LAN)
    assert (entry["kind"], entry["block_name"], entry["message_tag"]) == (
        "broadcast",
        "shipping_update",
        None,
    )
    assert "Đơn hàng notify_block đã được giao" in json.dumps(entry, ensure_ascii=False)
    assert "mã vận đơn load_orders" in json.dumps(entry, ensure_ascii=False)
    assert sandbox.outbox(BAO) == []
    assert "1 of 2 recipients are outside Messenger's 24-hour window" in result.log
    assert f"so were not notified: user {BAO}. The run in Airflow's UI: http" in result.log
    assert "/dags/notify_block/runs/" in result.log
    assert [r["query"].get("ahachat_message_tag") for r in sandbox.request_log()] == [None, None]


def test_a_failing_notification_is_logged_and_never_hides_the_failure(
    dag_runner: Any, sandbox: SandboxServer
) -> None:
    # Bảo is outside the 24-hour window: Messenger refuses the text. Lan still gets hers.
    alert = notifier(user_ids=[BAO, LAN], text="{{ ti.task_id }}: {{ exception }}")
    dag = failing_dag("notify_outside_window", task_callbacks={"on_failure_callback": alert})

    result = run(dag_runner, dag, sandbox)

    assert_failed_with_the_original_error(result)
    assert sandbox.outbox(BAO) == []
    assert len(sandbox.outbox(LAN)) == 1
    assert (
        "outside Messenger's 24-hour window (they last wrote or tapped a button of the bot more" in result.log
    )
    assert f"so were not notified: user {BAO}" in result.log
    assert "AhaChat: notified 1 of 2 recipients" in result.log


def test_bad_rendered_input_is_logged_once_and_spoils_only_what_it_touches(
    dag_runner: Any, sandbox: SandboxServer
) -> None:
    # The shared arguments are checked once for every recipient; a bad recipient spoils only itself.
    bad_tag = notifier(user_ids=[LAN, MAI], block_name="shipping_update", message_tag="{{ 'PROMOTION' }}")
    bad_user = notifier(user_ids=["{{ 'khong-phai-so' }}", MAI], text="{{ ti.task_id }} thất bại")
    dag = failing_dag("notify_bad_input", task_callbacks={"on_failure_callback": [bad_tag, bad_user]})

    result = run(dag_runner, dag, sandbox)

    assert_failed_with_the_original_error(result)
    assert result.log.count("AhaChat: not notifying anyone: ") == 1
    assert "'PROMOTION' is not a message tag" in result.log
    assert "AhaChat: notified 0 of 2 recipients" in result.log
    assert "AhaChat: not notifying user khong-phai-so: " in result.log
    assert "AhaChat: notified 1 of 2 recipients" in result.log
    assert sandbox.outbox(LAN) == []
    assert [(e["kind"], e["text"]) for e in sandbox.outbox(MAI)] == [("text", "load_orders thất bại")]


def test_a_wrong_token_is_logged_and_never_hides_the_failure(dag_runner: Any, sandbox: SandboxServer) -> None:
    alert = notifier(user_ids=LAN, text="{{ exception }}")
    dag = failing_dag("notify_wrong_token", task_callbacks={"on_failure_callback": alert})
    wrong = "e" * 64

    result = run(dag_runner, dag, sandbox, uri=connection_uri(sandbox.url, sandbox.bot_id, wrong))

    assert_failed_with_the_original_error(result)
    assert sandbox.outbox() == []
    assert "could not notify user 3824547807572463: AhaChat answered 401" in result.log
    result.assert_not_in_log(wrong)


def test_success_and_retry_callbacks(dag_runner: Any, sandbox: SandboxServer) -> None:
    from datetime import timedelta

    from airflow.sdk import DAG, task

    with DAG("notify_success_retry", schedule=None) as dag:

        @task(
            retries=1,
            retry_delay=timedelta(0),
            on_retry_callback=notifier(user_ids=LAN, text="retry {{ ti.task_id }} #{{ ti.try_number }}"),
            on_failure_callback=notifier(user_ids=LAN, text="failed {{ ti.task_id }} #{{ ti.try_number }}"),
        )
        def flaky() -> None:
            raise RuntimeError("flaky")

        @task(on_success_callback=notifier(user_ids=MAI, text="ok {{ ti.task_id }}"))
        def fine() -> str:
            return "done"

        fine()
        flaky()

    result = run(dag_runner, dag, sandbox)

    assert result.task_states == {"fine": "success", "flaky": "failed"}, result.summary()
    lan = texts(sandbox, LAN)
    assert len(lan) == 2
    assert "retry flaky #1" in lan[0]
    assert "failed flaky #2" in lan[1]
    (mai,) = texts(sandbox, MAI)
    assert "ok fine" in mai


def test_dag_level_failure_callback(dag_runner: Any, sandbox: SandboxServer) -> None:
    """dag.test() runs the DAG's own callbacks in-process, with the context of the task that failed."""
    alert = notifier(user_ids=LAN, text="DAG {{ dag.dag_id }}: {{ reason }} in {{ ti.task_id }}")
    dag = failing_dag("notify_dag_failure", on_failure_callback=alert)

    result = run(dag_runner, dag, sandbox)

    assert_failed_with_the_original_error(result)
    (sent,) = texts(sandbox, LAN)
    assert "DAG notify_dag_failure: task_failure in load_orders" in sent


def test_a_long_text_is_cut_to_fit(dag_runner: Any, sandbox: SandboxServer) -> None:
    alert = notifier(user_ids=LAN, text="{{ 'x' * 2500 }}")
    dag = failing_dag("notify_long_text", task_callbacks={"on_failure_callback": alert})

    run(dag_runner, dag, sandbox)

    (entry,) = sandbox.outbox(LAN)
    sent = json.dumps(entry)
    assert "x" * 1999 in sent and "x" * 2000 not in sent


def test_deadline_alert_path_runs_in_the_triggerer(
    sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deadline alert's AsyncCallback: Airflow's callback trigger awaits the notifier with a context."""
    try:
        from airflow.triggers.callback import CallbackTrigger as callback_trigger
    except ImportError:  # Airflow 3.1
        from airflow.triggers.deadline import (  # type: ignore[no-redef]
            DeadlineCallbackTrigger as callback_trigger,
        )

    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN.upper()}", sandbox.connection_uri)
    trigger = callback_trigger(
        callback_path="airflow_provider_ahachat.notifications.ahachat.AhaChatNotifier",
        callback_kwargs={
            "ahachat_conn_id": CONN,
            "user_ids": [LAN],
            "text": "⏰ {{ dag_run.dag_id }} trễ hạn ({{ dag_run.run_id }})",
            "context": {"dag_run": {"dag_id": "orders", "run_id": "scheduled__1"}, "deadline": {}},
        },
    )

    async def events() -> list[dict[str, Any]]:
        return [dict(event.payload) async for event in trigger.run()]

    payloads = asyncio.run(events())
    assert [str(p["state"]) for p in payloads][-1].lower().endswith("success"), payloads
    (sent,) = texts(sandbox, LAN)
    assert "⏰ orders trễ hạn (scheduled__1)" in sent


def test_bad_arguments_are_refused_when_the_dag_is_written() -> None:
    with pytest.raises(AhaChatValidationError, match="text, block_name: give exactly one of them"):
        notifier(user_ids=LAN)
    with pytest.raises(AhaChatValidationError, match="text, block_name: give exactly one of them"):
        notifier(user_ids=LAN, text="a", block_name="b")
    with pytest.raises(AhaChatValidationError, match="user_ids, phones: give at least one recipient"):
        notifier(text="a")
    with pytest.raises(AhaChatValidationError, match="phones: a text can only be sent by user ID"):
        notifier(phones="+84908071111", text="a")
    with pytest.raises(AhaChatValidationError, match="attributes: only a block"):
        notifier(user_ids=LAN, text="a", attributes={"x": "1"})


def test_alias_and_registration() -> None:
    from airflow_provider_ahachat.get_provider_info import get_provider_info
    from airflow_provider_ahachat.notifications.ahachat import AhaChatNotifier, send_ahachat_notification

    assert send_ahachat_notification is AhaChatNotifier
    info = get_provider_info()
    assert info["notifications"] == ["airflow_provider_ahachat.notifications.ahachat.AhaChatNotifier"]
    assert info["sensors"][0]["python-modules"] == ["airflow_provider_ahachat.sensors.ahachat"]
    assert info["triggers"][0]["python-modules"] == ["airflow_provider_ahachat.triggers.ahachat"]
