"""
The connection Test, as Airflow's API server runs it for the UI's Test button.

Airflow 3.3.2's UI posts ``port: 0`` for a connection saved without a port, and its API refuses
that as a different destination. These tests post what the UI posts to Airflow's own API app,
with the provider's middleware installed as Airflow installs it (from the plugin), and check what
the Test answers; ``tests/test_browser.py`` presses the real button in a real browser.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_ahachat.inbound.airflow_internals import connection_test_route_refuses_port_0
from airflow_provider_ahachat.inbound.connection_test import (
    AhaChatConnectionTestPlugin,
    ConnectionTestPortFix,
    rewrite_test_body,
)

BOT = "12404829"


def route_compares_destinations() -> bool:
    """
    Whether this Airflow's Test route refuses stored credentials for another host or port (from 3.3);
    before, it merges the form into the stored connection, and ``port: 0`` is no problem.
    """
    try:
        from airflow.api_fastapi.core_api.routes.public.connections import _same_endpoint  # noqa: F401
    except ImportError:
        return False
    return True


needs_the_destination_rule = pytest.mark.skipif(
    "not route_compares_destinations()",
    reason="this Airflow's Test route has no destination rule (before 3.3)",
)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"conn_type": "ahachat", "connection_id": "a", "port": 0}, {"port": None}),
        ({"conn_type": "ahachat", "connection_id": "a", "port": 8790}, None),
        ({"conn_type": "ahachat", "connection_id": "a", "port": None}, None),
        ({"conn_type": "ahachat", "connection_id": "a"}, None),
        ({"conn_type": "ahachat", "port": False}, None),
        ({"conn_type": "ahachat", "port": 0.0}, None),
        ({"conn_type": "ahachat", "port": "0"}, None),
        ({"conn_type": "http", "connection_id": "h", "port": 0}, None),
        ({"connection_id": "h", "port": 0}, None),
    ],
)
def test_only_port_zero_of_an_ahachat_connection_is_rewritten(body: dict[str, Any], expected: Any) -> None:
    answer = rewrite_test_body(json.dumps(body).encode())
    if expected is None:
        assert answer is None
    else:
        assert answer is not None
        assert json.loads(answer) == {**body, **expected}


@pytest.mark.parametrize("body", [b"", b"not json", b"[1, 2]", b'"ahachat"', b"\xff\xfe"])
def test_bodies_that_are_not_a_connection_are_left_alone(body: bytes) -> None:
    assert rewrite_test_body(body) is None


@pytest.fixture(scope="module")
def api(airflow_db: Any) -> Iterator[Any]:
    """Airflow's API app, built once for the module, with connection testing on and an admin's token."""
    from airflow import plugins_manager
    from airflow.api_fastapi.app import create_app, get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from fastapi.testclient import TestClient

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW__CORE__TEST_CONNECTION", "Enabled")
        if hasattr(plugins_manager, "get_fastapi_plugins"):  # cached from Airflow 3.2
            plugins_manager.get_fastapi_plugins.cache_clear()
        app = create_app("core")
        token = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username="admin", role="ADMIN"))
        with TestClient(app, headers={"Authorization": f"Bearer {token}"}) as client:
            yield client


@pytest.fixture
def stored(airflow_db: Any) -> Iterator[Any]:
    """``stored(conn_id, **fields)`` saves a connection in Airflow's database, as the UI's form does."""
    from airflow.models.connection import Connection
    from airflow.utils.session import create_session

    ids: list[str] = []

    def store(conn_id: str, **fields: Any) -> None:
        with create_session() as session:
            session.add(Connection(conn_id=conn_id, **fields))
        ids.append(conn_id)

    yield store
    with create_session() as session:
        session.query(Connection).filter(Connection.conn_id.in_(ids)).delete(synchronize_session=False)


def press_test(api: Any, conn_id: str) -> Any:
    """Post what 3.3.2's Test button posts for the stored connection: the list row, port as a number."""
    row = api.get(f"/api/v2/connections/{conn_id}").json()
    body = {
        "conn_type": row["conn_type"],
        "connection_id": row["connection_id"],
        "description": row["description"] or "",
        "extra": row["extra"] or "{}",
        "host": row["host"] or "",
        "login": row["login"] or "",
        "password": row["password"] or "",
        "port": row["port"] or 0,  # Number(null) is 0
        "schema": row["schema"] or "",
    }
    assert body["password"] in ("", "***"), "the API hands the UI a masked password"
    return api.post("/api/v2/connections/test", json=body)


def test_the_test_button_works_for_a_connection_without_a_port(api: Any, stored: Any, sandbox: Any) -> None:
    if route_compares_destinations():  # 3.3.0 to 3.3.2: the workaround runs
        assert connection_test_route_refuses_port_0(), (
            "Airflow has the fix: this test shows the workaround no longer runs"
        )
    else:  # before 3.3 there is nothing to work around
        assert not connection_test_route_refuses_port_0()
    assert any(
        m["middleware"] is ConnectionTestPortFix for m in AhaChatConnectionTestPlugin.fastapi_root_middlewares
    )
    stored(
        "aha_ui",
        conn_type="ahachat",
        login=BOT,
        password=sandbox.token,
        extra=json.dumps({"base_url": sandbox.url}),
    )
    answer = press_test(api, "aha_ui")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "status": True,
        "message": f"Connected to AhaChat bot {BOT} (Shop Thời Trang Lan Anh) at {sandbox.url}.",
    }
    assert sandbox.token not in answer.text


def test_the_real_service_default_gets_an_answer_too(api: Any, stored: Any) -> None:
    """Empty Base URL: the test reaches for https://ahachat.com and answers in words, whatever happens."""
    stored("aha_real", conn_type="ahachat", login=BOT, password="f" * 64)
    answer = press_test(api, "aha_real")
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] is False  # a made-up token: refused, or AhaChat out of reach here
    assert "https://ahachat.com" in answer.json()["message"] or "refused" in answer.json()["message"]


@needs_the_destination_rule
def test_other_connection_types_keep_airflows_answer(api: Any, stored: Any) -> None:
    """The middleware touches AhaChat connections only: an HTTP connection without a port still gets 400."""
    stored("plain_http", conn_type="http", host="example.com", login="u", password="p")
    answer = press_test(api, "plain_http")
    assert answer.status_code == 400
    assert "differs from the stored connection" in answer.text


@needs_the_destination_rule
def test_a_different_port_still_needs_its_credentials(api: Any, stored: Any, sandbox: Any) -> None:
    """The route's rule stands: stored credentials are used only for the stored destination."""
    stored("aha_ported", conn_type="ahachat", login=BOT, password=sandbox.token, host="127.0.0.1", port=1)
    row = api.get("/api/v2/connections/aha_ported").json()
    body = {"conn_type": "ahachat", "connection_id": "aha_ported", "host": row["host"], "port": 0}
    body.update(login=BOT, password="***")
    answer = api.post("/api/v2/connections/test", json=body)
    assert answer.status_code == 400
    assert "differs from the stored connection" in answer.text


def test_the_middleware_passes_everything_through_when_off(airflow_db: Any) -> None:
    """Where Airflow has the fix (or the setting is off), the request reaches the route as it was sent."""
    import asyncio

    seen: list[bytes] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        message = await receive()
        seen.append(message["body"])

    body = json.dumps({"conn_type": "ahachat", "port": 0}).encode()

    async def run(enabled: bool) -> None:
        messages = iter([{"type": "http.request", "body": body, "more_body": False}])

        async def receive() -> Any:
            return next(messages)

        scope = {"type": "http", "method": "POST", "path": "/api/v2/connections/test", "headers": []}
        await ConnectionTestPortFix(app, enabled=enabled)(scope, receive, lambda message: asyncio.sleep(0))

    asyncio.run(run(False))
    asyncio.run(run(True))
    assert [json.loads(b)["port"] for b in seen] == [0, None]


@pytest.mark.parametrize(
    ("conn", "expected"),
    [
        ({"login": "", "password": "x" * 64}, "Bot ID (login) is empty"),
        ({"login": BOT, "password": ""}, "Bot Token (password) is empty"),
        ({"login": "shop_lan_anh", "password": "x" * 64}, "Bot ID (login) must be digits only"),
        (
            {"login": BOT, "password": "x" * 64, "extra": json.dumps({"base_url": "127.0.0.1:8790"})},
            "Base URL (extra field 'base_url') must make an http or https URL",
        ),
        (
            {"login": BOT, "password": "x" * 64, "extra": json.dumps({"timeout": "soon"})},
            "Read timeout (seconds) (extra field 'timeout') must be a number of seconds above 0",
        ),
    ],
)
def test_an_incomplete_connection_is_explained_without_airflows_made_up_id(
    api: Any, stored: Any, conn: dict[str, Any], expected: str
) -> None:
    stored("aha_incomplete", conn_type="ahachat", **conn)
    answer = press_test(api, "aha_incomplete")
    assert answer.status_code == 200, answer.text
    status, message = answer.json()["status"], answer.json()["message"]
    assert status is False
    assert message.startswith("The connection is not complete: ")
    assert expected in message
    assert "connection '" not in message  # no connection ID, made up or not
    assert "refused" not in message  # nothing was sent


def test_a_test_with_ahachat_out_of_reach_answers_within_3_seconds(api: Any, stored: Any) -> None:
    """One attempt and short timeouts, for the Test only: a port nobody listens on, then a black hole."""
    import socket

    with socket.socket() as probe:  # a port that refuses
        probe.bind(("127.0.0.1", 0))
        refused_port = probe.getsockname()[1]
    # A listener that never accepts: connecting succeeds at the kernel's leisure, nothing answers.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(0)
    try:
        for name, url in (
            ("aha_refused", f"http://127.0.0.1:{refused_port}"),
            ("aha_silent", f"http://127.0.0.1:{silent.getsockname()[1]}"),
        ):
            stored(
                name, conn_type="ahachat", login=BOT, password="x" * 64, extra=json.dumps({"base_url": url})
            )
            started = time.monotonic()
            answer = press_test(api, name)
            took = time.monotonic() - started
            assert answer.status_code == 200, answer.text
            assert answer.json()["status"] is False
            message = answer.json()["message"]
            assert url in message, message
            assert ("Could not reach AhaChat" in message) or ("did not answer within" in message), message
            # Not a timing assertion on speed: a bound that only a retrying test (6 attempts, 12.8 s
            # before) or the default 10 s/30 s timeouts could break.
            assert took < 6, f"{name}: the test took {took:.1f}s"
    finally:
        silent.close()
