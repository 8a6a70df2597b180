"""
The webhook receiver over real HTTP (uvicorn on loopback), recording into Airflow's metadata DB.

The app is the plugin's (connections read by Airflow from ``AIRFLOW_CONN_*``, events recorded
through :mod:`airflow_provider_ahachat.inbound.airflow_internals`), only without the connection cache.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from helpers.app_server import AppServer
from helpers.webhook_helpers import BOT_ID, CONN, clear_events, conn_json, recorded, sync_consumer

from airflow_provider_ahachat.inbound.receiver import (
    MAX_BODY_BYTES,
    SECRET_HEADER,
    Throttle,
    WebhookSettings,
    create_receiver_app,
)

SECRET = "whsec-9f3a1c77-NEVER-IN-LOGS"
USER_ID = "3824547807572463"
EVENTS = ("order_status", "cancel_order", "quiet", "limited")
REPLY = "Đang tra cứu đơn hàng…"


@pytest.fixture(scope="module")
def consumer_dag(airflow_db: Any) -> str:
    """A DAG scheduled on the test's events."""
    return sync_consumer("t_webhook_consumer", EVENTS, CONN)


@pytest.fixture(scope="module")
def receiver_url(consumer_dag: str) -> Iterator[str]:
    from airflow_provider_ahachat.inbound import airflow_internals as asset_change
    from airflow_provider_ahachat.inbound.plugin import load_webhook_settings

    app = create_receiver_app(
        load_settings=load_webhook_settings, record=asset_change.record_asset_event, cache_seconds=0
    )
    # No follow-up thread writing to this worker's database behind later tests (tested on its own).
    with pytest.MonkeyPatch.context() as patch, AppServer(app) as server:
        patch.setattr(asset_change.follow_up, "watch", lambda asset_id, dag_ids: None)
        yield server.url


@pytest.fixture
def hook_conn(monkeypatch: pytest.MonkeyPatch, receiver_url: str) -> str:
    """The connection ``aha_hook`` with a secret, and no event of it in the DB."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_AHA_HOOK",
        conn_json(webhook_secret=SECRET, webhook_replies={"order_status": REPLY}),
    )
    clear_events()
    return receiver_url


def queued_dags() -> set[str]:
    from airflow.models.asset import AssetDagRunQueue
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return set(session.scalars(select(AssetDagRunQueue.target_dag_id)))


def post(url: str, path: str, *, secret: str | None = SECRET, **kwargs: Any) -> requests.Response:
    headers = dict(kwargs.pop("headers", {}))
    if secret is not None:
        headers[SECRET_HEADER] = secret
    return requests.post(f"{url}/webhooks/{path}", headers=headers, timeout=30, **kwargs)


def test_a_signed_call_records_the_customer_and_answers_with_the_events_text(
    hook_conn: str, consumer_dag: str
) -> None:
    before = time.time()
    answer = post(
        hook_conn,
        f"{CONN}/order_status",
        json={"messenger_user_id": USER_ID, "order_code": "DH10231", "phone": "0908071111", "n": 2},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"messages": [{"text": REPLY}]}
    (extra,) = recorded()
    received = extra.pop("received_at")
    assert extra == {
        "messenger_user_id": USER_ID,
        "bot_id": BOT_ID,
        "conn_id": CONN,
        "event": "order_status",
        "fields": {"order_code": "DH10231", "phone": "0908071111", "n": 2},
    }
    from datetime import datetime

    assert before - 1 <= datetime.fromisoformat(received).timestamp() <= time.time() + 1
    assert queued_dags() == {consumer_dag}


def test_form_fields_are_read_as_well_as_json(hook_conn: str) -> None:
    urlencoded = post(hook_conn, f"{CONN}/cancel_order", data={"messenger_user_id": USER_ID, "order": "DH1"})
    multipart = post(
        hook_conn, f"{CONN}/cancel_order", files={"messenger_user_id": (None, "42"), "order": (None, "DH2")}
    )
    assert (urlencoded.status_code, urlencoded.json()) == (200, {})
    assert (multipart.status_code, multipart.json()) == (200, {})
    assert [(e["messenger_user_id"], e["fields"]) for e in recorded("cancel_order")] == [
        (USER_ID, {"order": "DH1"}),
        ("42", {"order": "DH2"}),
    ]


def test_one_reply_text_for_every_event_and_a_custom_user_id_field(
    hook_conn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_AHA_HOOK",
        conn_json(webhook_secret=SECRET, webhook_replies="Xin chờ", webhook_user_id_field="uid"),
    )
    answer = post(hook_conn, f"{CONN}/quiet", json={"uid": USER_ID, "messenger_user_id": "1"})
    assert (answer.status_code, answer.json()) == (200, {"messages": [{"text": "Xin chờ"}]})
    assert [(e["messenger_user_id"], e["fields"]) for e in recorded("quiet")] == [
        (USER_ID, {"messenger_user_id": "1"})
    ]
    missing = post(hook_conn, f"{CONN}/quiet", json={"messenger_user_id": USER_ID})
    assert missing.status_code == 422
    assert "uid" in missing.json()["error"]


GOOD = {"json": {"messenger_user_id": USER_ID}}
BIG = "x" * (MAX_BODY_BYTES + 1)


def _chunks() -> Iterator[bytes]:
    yield b'{"messenger_user_id": "1", "pad": "'
    for _ in range(70):
        yield b"x" * 1024
    yield b'"}'


BAD_REQUESTS: dict[str, tuple[int, dict[str, Any]]] = {
    "wrong secret": (401, {"secret": "nope", **GOOD}),
    "no secret": (401, {"secret": None, **GOOD}),
    "a secret that is a prefix": (401, {"secret": SECRET[:-1], **GOOD}),
    "unknown connection": (401, {"path": "nobody/order_status", **GOOD}),
    "a connection of another type": (401, {"path": "other_type/order_status", **GOOD}),
    "a connection without a secret": (401, {"path": "no_secret/order_status", **GOOD}),
    "receiving turned off": (403, {"path": "turned_off/order_status", **GOOD}),
    "body over 64 KiB": (413, {"json": {"messenger_user_id": USER_ID, "pad": BIG}}),
    "body over 64 KiB, chunked": (
        413,
        {"data": _chunks, "headers": {"Content-Type": "application/json"}},
    ),
    "not JSON": (400, {"data": "{nope", "headers": {"Content-Type": "application/json"}}),
    "a JSON list": (400, {"json": [USER_ID]}),
    "a JSON string": (400, {"json": USER_ID}),
    "plain text": (415, {"data": USER_ID, "headers": {"Content-Type": "text/plain"}}),
    "no user ID": (422, {"json": {"order_code": "DH1"}}),
    "an empty user ID": (422, {"json": {"messenger_user_id": ""}}),
    "a template AhaChat did not fill": (422, {"json": {"messenger_user_id": "{{messenger_user_id}}"}}),
    "a user ID that is an object": (422, {"json": {"messenger_user_id": {"id": 1}}}),
    "a bad event name": (422, {"path": f"{CONN}/bad%20name", **GOOD}),
    "a too long event name": (422, {"path": f"{CONN}/{'e' * 101}", **GOOD}),
    "an idempotency key over 200 characters": (
        422,
        {"json": {"messenger_user_id": USER_ID, "idempotency_key": "k" * 201}},
    ),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_a_bad_request_records_nothing_and_says_why(
    case: str, hook_conn: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_OTHER_TYPE", json.dumps({"conn_type": "http", "extra": {"webhook_secret": SECRET}})
    )
    monkeypatch.setenv("AIRFLOW_CONN_NO_SECRET", conn_json())
    monkeypatch.setenv("AIRFLOW_CONN_TURNED_OFF", conn_json(webhook_secret=SECRET, webhook_enabled="false"))
    status, spec = BAD_REQUESTS[case]
    spec = dict(spec)
    path = spec.pop("path", f"{CONN}/order_status")
    if callable(spec.get("data")):
        spec["data"] = spec["data"]()
    caplog.set_level(logging.DEBUG)
    answer = post(hook_conn, path, **spec)
    assert answer.status_code == status, answer.text
    problem = answer.json()["error"]
    assert problem
    if status == 401:
        assert problem == f"wrong or missing {SECRET_HEADER} for this connection"
    assert SECRET not in answer.text
    assert SECRET not in caplog.text
    assert recorded() == []
    assert queued_dags() == set()


@pytest.mark.parametrize(
    ("status", "words"),
    [(400, "JSON"), (413, "64 KiB"), (415, "Content-Type"), (422, "messenger_user_id")],
)
def test_each_refusal_names_the_field_and_the_rule(status: int, words: str, hook_conn: str) -> None:
    cases = [spec for s, spec in BAD_REQUESTS.values() if s == status]
    for spec in cases:
        spec = dict(spec)
        path = spec.pop("path", f"{CONN}/order_status")
        if callable(spec.get("data")):
            spec["data"] = spec["data"]()
        answer = post(hook_conn, path, **spec)
        assert answer.status_code == status
        message = answer.json()["error"]
        assert any(w in message for w in (words, "event", "idempotency_key", "body")), message


def test_a_repeated_idempotency_key_records_nothing_more(hook_conn: str) -> None:
    for _ in range(2):
        first = post(hook_conn, f"{CONN}/order_status", json=GOOD["json"], headers={"Idempotency-Key": "k-1"})
        assert first.json() == {"messages": [{"text": REPLY}]}
        by_field = post(hook_conn, f"{CONN}/order_status", json={**GOOD["json"], "idempotency_key": "k-2"})
        assert by_field.status_code == 200
    post(hook_conn, f"{CONN}/order_status", json=GOOD["json"], headers={"Idempotency-Key": "k-3"})
    post(hook_conn, f"{CONN}/cancel_order", json=GOOD["json"], headers={"Idempotency-Key": "k-1"})
    assert [e["idempotency_key"] for e in recorded()] == ["k-1", "k-2", "k-3"]
    assert [e["idempotency_key"] for e in recorded("cancel_order")] == ["k-1"]


def test_concurrent_retries_with_one_key_record_one_event(hook_conn: str) -> None:
    results: list[int] = []

    def call() -> None:
        answer = post(
            hook_conn, f"{CONN}/order_status", json=GOOD["json"], headers={"Idempotency-Key": "same"}
        )
        results.append(answer.status_code)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 8
    assert len(recorded()) == 1


def test_over_the_limit_answers_429_and_records_nothing(
    hook_conn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_AHA_HOOK", conn_json(webhook_secret=SECRET, webhook_events_per_minute=3))
    answers = [post(hook_conn, f"{CONN}/limited", json=GOOD["json"]) for _ in range(5)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]
    assert int(answers[3].headers["Retry-After"]) >= 1
    assert "webhook_events_per_minute" in answers[3].json()["error"]
    assert len(recorded("limited")) == 3


def test_an_event_no_dag_is_scheduled_on_records_nothing(hook_conn: str) -> None:
    answer = post(hook_conn, f"{CONN}/nobody_listens", json=GOOD["json"])
    assert answer.status_code == 404
    assert "ahachat_event('nobody_listens', ahachat_conn_id='aha_hook')" in answer.json()["error"]
    assert recorded("nobody_listens") == []


def test_the_secret_never_reaches_the_event(hook_conn: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    answer = post(
        hook_conn,
        f"{CONN}/order_status",
        json={
            "messenger_user_id": USER_ID,
            "copied": f"header {SECRET}",
            "nested": {"deep": [SECRET]},
            SECRET: "as a name",
        },
        headers={"Idempotency-Key": f"x{SECRET}"},
    )
    assert answer.status_code == 200
    (extra,) = recorded()
    assert SECRET not in json.dumps(extra)
    assert extra["fields"] == {"copied": "***", "nested": {"deep": ["***"]}}
    assert SECRET not in caplog.text


def test_wrong_settings_are_told_only_to_a_caller_with_the_secret(
    hook_conn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_AHA_HOOK", conn_json(webhook_secret=SECRET, webhook_events_per_minute="x")
    )
    assert post(hook_conn, f"{CONN}/order_status", secret="nope", json=GOOD["json"]).status_code == 401
    answer = post(hook_conn, f"{CONN}/order_status", json=GOOD["json"])
    assert answer.status_code == 500
    assert "webhook_events_per_minute" in answer.json()["error"]
    assert recorded() == []


def test_a_database_failure_answers_503_and_tells_nothing_of_it(caplog: pytest.LogCaptureFixture) -> None:
    settings = WebhookSettings("c", "1", secret=SECRET)

    def broken(uri: str, extra: dict[str, Any], key: str | None) -> Any:
        raise RuntimeError(f"database is locked (while storing {extra} with {SECRET})")

    app = create_receiver_app(load_settings=lambda conn_id: settings, record=broken, cache_seconds=0)
    caplog.set_level(logging.INFO)
    with AppServer(app) as server:
        answer = post(server.url, "c/order_status", json=GOOD["json"])
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "1"
    assert answer.json() == {"error": "could not record the event now; call again"}
    assert "database is locked" in caplog.text
    assert SECRET not in caplog.text


def test_settings_from_the_connection_extra() -> None:
    settings = WebhookSettings.from_connection(
        "c",
        conn_type="ahachat",
        login="1",
        extra={
            "extra__ahachat__webhook_secret": "s",
            "webhook_replies": '{"a": "A", "*": "any"}',
            "webhook_events_per_minute": "0",
            "webhook_enabled": True,
        },
    )
    assert settings is not None
    assert (settings.secret, settings.reply_for("a"), settings.reply_for("b")) == ("s", "A", "any")
    assert settings.events_per_minute == 0
    assert "secret='s'" not in repr(settings)
    assert WebhookSettings.from_connection("c", conn_type="http", login=None, extra={}) is None
    wrong_extras: list[tuple[dict[str, Any], str]] = [
        ({"webhook_replies": "{not json"}, "webhook_replies"),
        ({"webhook_replies": {"bad name": "x"}}, "webhook_replies"),
        ({"webhook_replies": {"a": ""}}, "webhook_replies"),
        ({"webhook_events_per_minute": -1}, "webhook_events_per_minute"),
        ({"webhook_user_id_field": "a b"}, "webhook_user_id_field"),
    ]
    for bad, field in wrong_extras:
        wrong = WebhookSettings.from_connection(
            "c", conn_type="ahachat", login="1", extra={"webhook_secret": "s", **bad}
        )
        assert wrong is not None
        assert wrong.problem is not None
        assert wrong.problem.startswith(field)


def test_the_throttle_refills_at_the_limit() -> None:
    now = [0.0]
    throttle = Throttle(clock=lambda: now[0])
    assert [throttle.take("c", 60) for _ in range(60)] == [0.0] * 60
    assert throttle.take("c", 60) == pytest.approx(1.0)
    assert throttle.take("other", 60) == 0.0
    now[0] += 2.0
    assert [throttle.take("c", 60) for _ in range(2)] == [0.0, 0.0]
    assert throttle.take("c", 60) > 0
    assert throttle.take("c", 0) == 0.0
