"""The trigger of ``UserSensor(deferrable=True)``, run directly on an event loop against the sandbox."""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from helpers.sandbox_fixtures import user_lookups

from airflow_provider_ahachat.exceptions import AhaChatValidationError
from airflow_provider_ahachat.sandbox import SandboxServer
from airflow_provider_ahachat.sandbox.server import connection_uri

LAN = "3824547807572463"  # Nguyễn Thị Lan: tags khach_quen, vip, cho_giao_hang
CONN = "aha_trigger"

pytestmark = pytest.mark.usefixtures("airflow_db")


@pytest.fixture
def conn(sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> SandboxServer:
    """The sandbox as connection ``aha_trigger``, without client retries: each check is one request."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN.upper()}", sandbox.connection_uri + "?max_retries=0")
    return sandbox


def trigger(**kwargs: Any) -> Any:
    from airflow_provider_ahachat.triggers.ahachat import UserTrigger

    kwargs.setdefault("ahachat_conn_id", CONN)
    kwargs.setdefault("poke_interval", 0.1)
    kwargs.setdefault("deadline", datetime.now(timezone.utc) + timedelta(seconds=10))
    return UserTrigger(**kwargs)


def first_event(t: Any) -> dict[str, Any]:
    async def run() -> Any:
        return await anext(t.run())

    return dict(asyncio.run(run()).payload)


def test_serialised_form_round_trips_and_holds_no_token(conn: SandboxServer) -> None:
    t = trigger(
        user_id=LAN,
        attributes={"delivery_confirmed": "yes", "order_id": None},
        tags=["cho_giao_hang"],
        absent_tags="da_huy_don",
        exponential_backoff=True,
        max_wait=30,
    )
    classpath, kwargs = t.serialize()
    assert classpath == "airflow_provider_ahachat.triggers.ahachat.UserTrigger"
    module, name = classpath.rsplit(".", 1)
    again = getattr(importlib.import_module(module), name)(**kwargs)
    assert again.serialize() == (classpath, kwargs)
    assert kwargs["attributes"] == {"delivery_confirmed": "yes", "order_id": None}
    assert kwargs["absent_tags"] == ["da_huy_don"]
    assert kwargs["ahachat_conn_id"] == CONN
    # What Airflow stores in the metadata database, in the encoding it uses for trigger arguments.
    from airflow.serialization.serialized_objects import BaseSerialization

    stored = json.dumps(BaseSerialization.serialize(kwargs), default=str)
    for text in (repr(t.serialize()), stored, repr(t)):
        assert conn.token not in text
        assert "ahachat_token" not in text


def test_invalid_input_is_refused_when_built() -> None:
    with pytest.raises(AhaChatValidationError, match="give exactly one of them"):
        trigger(user_id=LAN, phone="+84908071111")
    with pytest.raises(AhaChatValidationError, match=r"attributes\.cart: the wanted value must be"):
        trigger(user_id=LAN, attributes={"cart": {"items": 2}})
    with pytest.raises(AhaChatValidationError, match="cannot be both required and forbidden"):
        trigger(user_id=LAN, tags=["vip"], absent_tags=["vip"])


def test_success_when_the_customer_answers_part_way(conn: SandboxServer, after_lookups: Any) -> None:
    after_lookups(
        5, conn.update_user, LAN, attributes={"delivery_confirmed": "yes"}, add_tags=["da_nhan_hang"]
    )
    started = time.monotonic()
    event = first_event(
        trigger(
            user_id=LAN,
            attributes={"delivery_confirmed": "yes", "city": None},
            tags=["da_nhan_hang"],
            absent_tags=["da_huy_don"],
        )
    )
    elapsed = time.monotonic() - started
    assert event["status"] == "success", event
    assert event["user"]["messenger_user_id"] == LAN
    assert event["user"]["attributes"]["delivery_confirmed"] == "yes"
    assert elapsed < 10
    assert len(user_lookups(conn)) >= 6  # it kept checking at poke_interval while it waited


def test_a_customer_who_does_not_exist_yet_is_waited_for(conn: SandboxServer, after_lookups: Any) -> None:
    new_user = {"messenger_user_id": "9990001112223334", "first_name": "Hoa", "phone": "+84977000111"}
    after_lookups(3, conn.add_user, new_user)
    event = first_event(trigger(phone="0977 000 111"))
    assert event["status"] == "success", event
    assert event["user"]["messenger_user_id"] == "9990001112223334"


def test_deadline_gives_a_timeout_event(conn: SandboxServer) -> None:
    started = time.monotonic()
    event = first_event(
        trigger(
            user_id=LAN,
            attributes={"delivery_confirmed": "yes"},
            deadline=datetime.now(timezone.utc) + timedelta(seconds=0.8),
        )
    )
    assert event["status"] == "timeout", event
    assert 0.7 < time.monotonic() - started < 8  # its own deadline, not the default 10 s
    assert "did not match (delivery_confirmed='yes')" in event["message"]


def test_rate_limits_and_server_errors_keep_it_polling(
    conn: SandboxServer, after_lookups: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    conn.configure(fail_next=[503, 429, 500, 502])
    after_lookups(6, conn.update_user, LAN, attributes={"delivery_confirmed": "yes"})
    event = first_event(trigger(user_id=LAN, attributes={"delivery_confirmed": "yes"}))
    assert event["status"] == "success", event
    statuses = [r["status"] for r in user_lookups(conn)]
    assert statuses[:4] == [503, 429, 500, 502]
    assert statuses[-1] == 200
    logged = capsys.readouterr().out  # the trigger's log, through Airflow's structlog
    assert logged.count("checking again at the next interval") == 4
    assert "AhaChat answered 429 to GET /api/bots/12404829/users/" in logged
    assert conn.token not in logged


def test_connection_refused_keeps_it_polling(monkeypatch: pytest.MonkeyPatch, sandbox: SandboxServer) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = connection_uri(f"http://127.0.0.1:{port}", sandbox.bot_id, sandbox.token) + "?max_retries=0"
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN.upper()}", uri)
    event = first_event(trigger(user_id=LAN, deadline=datetime.now(timezone.utc) + timedelta(seconds=0.5)))
    assert event["status"] == "timeout", event  # never an error: it waited until the deadline


def test_a_wrong_token_is_an_error_event_without_the_token(
    sandbox: SandboxServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="httpx")  # Airflow quiets it to WARNING
    wrong = "e" * 64
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN.upper()}", connection_uri(sandbox.url, sandbox.bot_id, wrong))
    started = time.monotonic()
    event = first_event(trigger(user_id=LAN))
    assert time.monotonic() - started < 8  # a wait would last until the 10 s deadline
    assert event["status"] == "error"
    assert event["error"] == "AhaChatAuthError"
    assert event["http_status"] == 401
    assert "check the Bot ID and the Bot Token" in event["message"]
    assert len(user_lookups(sandbox)) == 1
    # httpx logged the request, and the filter took the token out of it.
    assert "ahachat_token=***" in caplog.text
    assert wrong not in caplog.text + capsys.readouterr().out + json.dumps(event)


def test_a_wrong_bot_id_is_an_error_event_not_a_wait(
    sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN.upper()}", connection_uri(sandbox.url, "99999999", sandbox.token))
    started = time.monotonic()
    event = first_event(trigger(user_id=LAN))
    assert time.monotonic() - started < 8  # a wait would last until the 10 s deadline
    assert (event["status"], event["error"], event["http_status"]) == ("error", "AhaChatNotFoundError", 404)
    assert "AhaChat knows no bot with this Bot ID" in event["message"]


def test_a_missing_connection_is_an_error_event() -> None:
    event = first_event(trigger(ahachat_conn_id="no_such_connection", user_id=LAN))
    assert event["status"] == "error"
    assert "Could not read the connection 'no_such_connection'" in event["message"]


def test_the_event_loop_is_never_blocked(conn: SandboxServer, after_lookups: Any) -> None:
    """A ticker on the same loop keeps ticking while the trigger waits on a slow AhaChat."""
    conn.configure(latency_ms=500)
    after_lookups(3, conn.update_user, LAN, add_tags=["da_nhan_hang"])
    t = trigger(user_id=LAN, tags=["da_nhan_hang"], poke_interval=0.05)

    async def main() -> tuple[dict[str, Any], list[float]]:
        gaps: list[float] = []
        done = asyncio.Event()

        async def ticker() -> None:
            last = time.monotonic()
            while not done.is_set():
                await asyncio.sleep(0.01)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        tick = asyncio.create_task(ticker())
        event = await anext(t.run())
        done.set()
        await tick
        return dict(event.payload), gaps

    event, gaps = asyncio.run(main())
    assert event["status"] == "success", event
    assert len(user_lookups(conn)) >= 3  # several slow requests happened during the wait
    assert len(gaps) > 60  # well over a second of 10 ms ticks
    # A blocking request would stall the loop for the sandbox's 500 ms; the connection is read in a
    # worker thread too.
    assert max(gaps) < 0.3, max(gaps)


def test_exponential_backoff_waits_longer_each_time(conn: SandboxServer) -> None:
    from airflow_provider_ahachat.triggers.ahachat import next_interval

    assert [next_interval(0.1, n, True, None) for n in (1, 2, 3, 4)] == [0.1, 0.2, 0.4, 0.8]
    assert [next_interval(0.1, n, True, 0.3) for n in (1, 2, 3)] == [0.1, 0.2, 0.3]
    assert next_interval(5, 7, False, None) == 5
    deadline = datetime.now(timezone.utc) + timedelta(seconds=1.6)
    event = first_event(trigger(user_id=LAN, tags=["never"], exponential_backoff=True, deadline=deadline))
    assert event["status"] == "timeout"
    # 0.1 + 0.2 + 0.4 + 0.8 s: five checks fit in 1.6 s, where a fixed 0.1 s interval makes about 16.
    assert 4 <= len(user_lookups(conn)) <= 7


def test_the_triggerer_registers_the_token_with_the_secret_masker(
    sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.sdk.log import redact

    token = "7" * 60 + "beef"  # used by no other test, so only this trigger can have registered it
    line = f"GET /api/bots/{sandbox.bot_id}/users/{LAN}?ahachat_token={token}"
    assert token in str(redact(line))
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN.upper()}", connection_uri(sandbox.url, sandbox.bot_id, token))
    event = first_event(trigger(user_id=LAN))
    assert event["error"] == "AhaChatAuthError"
    assert token not in str(redact(line))
