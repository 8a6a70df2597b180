"""
A hostile or broken server against the client: redirects of every kind, the token echoed back at
every place and every cut point, huge answers, and what the HTTP libraries log at DEBUG.

Each promise is checked for both clients (``requests`` and ``httpx``) over real loopback HTTP.
"""

from __future__ import annotations

import asyncio
import json
import logging
import pickle
import traceback
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import pytest
from recording_server import RecordingServer, Reply

from airflow_provider_ahachat.client import AhaChatClient, AsyncAhaChatClient, RetryPolicy
from airflow_provider_ahachat.exceptions import AhaChatAPIError, AhaChatError
from airflow_provider_ahachat.redaction import MAX_KEPT, MIN_FRAGMENT, bounded, redact

# A token with characters that change when percent-encoded, so that both forms are tried.
TOKEN = "tk+Q9/v7Zx3Lm8Np2Rs6Tu0Wy4Ab1Cd5Ef9Gh3Jk7Mn=="
BOT = "12404829"
USER = "3824547807572463"
FAST = RetryPolicy(max_retries=3, backoff_base=0.01, backoff_max=0.05, max_retry_time=5)
REDIRECTS = (301, 302, 303, 307, 308)


def leaks(text: str, token: str = TOKEN) -> list[str]:
    """Every piece of ``token`` (or of its percent-encoded form) of MIN_FRAGMENT characters in ``text``."""
    found = []
    for form in {token, quote(token, safe="")}:
        for i in range(len(form) - MIN_FRAGMENT + 1):
            piece = form[i : i + MIN_FRAGMENT]
            if piece in text:
                found.append(piece)
    return found


def everything(err: BaseException) -> str:
    """All a log, a task's failure, XCom or a pickle would show of an error."""
    assert isinstance(err, AhaChatError)
    return "\n".join(
        [
            str(err),
            repr(err),
            "".join(traceback.format_exception(err)),
            repr(pickle.loads(pickle.dumps(err)).__dict__),
            str(err.api_message),
        ]
    )


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    srv = RecordingServer().start()
    yield srv
    srv.stop()


@pytest.fixture
def elsewhere() -> Iterator[RecordingServer]:
    """Another origin a redirect may point to."""
    srv = RecordingServer().start()
    yield srv
    srv.stop()


def call_sync(server: RecordingServer, action: Callable[[Any], Any], retry: RetryPolicy = FAST) -> Any:
    with AhaChatClient(BOT, TOKEN, server.url, retry=retry, read_timeout=5, connect_timeout=2) as client:
        return action(client)


def call_async(server: RecordingServer, action: Callable[[Any], Any], retry: RetryPolicy = FAST) -> Any:
    async def go() -> Any:
        async with AsyncAhaChatClient(BOT, TOKEN, server.url, retry=retry, read_timeout=5) as client:
            return await action(client)

    return asyncio.run(go())


SYNC_ACTIONS: dict[str, Callable[[Any], Any]] = {
    "send_text (POST, messages)": lambda c: c.run("send_text", {"text": "xin chào"}, user_id=USER),
    "broadcast by phone (POST)": lambda c: c.run(
        "broadcast_block", {"block_name": "welcome"}, phone="0908071111"
    ),
    "find_user (GET)": lambda c: c.send(c.prepare("find_user", user_id=USER)),
}


def _async_find(c: Any) -> Any:
    return c.send(c.prepare("find_user", user_id=USER))


def _async_check(c: Any) -> Any:
    return c.send(c.prepare("check_connection"))


ASYNC_ACTIONS: dict[str, Callable[[Any], Any]] = {"find_user": _async_find, "check_connection": _async_check}


# --------------------------------------------------------------------------- 1. redirects


def _location(kind: str, server: RecordingServer, elsewhere: RecordingServer) -> str:
    return {
        "another host": f"{elsewhere.url}/api/bots/{BOT}/collect?ahachat_token={TOKEN}",
        "same host": f"{server.url}/api/bots/{BOT}/users/{USER}",
        "relative": "/somewhere/else",
        "token in the path": f"{elsewhere.url}/{TOKEN}/x",
    }[kind]


@pytest.mark.parametrize("status", REDIRECTS)
@pytest.mark.parametrize("target", ["another host", "same host", "relative", "token in the path"])
@pytest.mark.parametrize("action", list(SYNC_ACTIONS))
def test_a_redirect_is_never_followed_and_never_success(
    server: RecordingServer, elsewhere: RecordingServer, status: int, target: str, action: str
) -> None:
    location = _location(target, server, elsewhere)
    server.default = Reply(status=status, headers={"Location": location}, body={"success": True, "data": {}})
    with pytest.raises(AhaChatAPIError) as caught:
        call_sync(server, SYNC_ACTIONS[action])
    err = caught.value
    assert err.status == status
    assert "redirect" in str(err) and "not followed" in str(err)
    assert len(server.requests) == 1  # neither followed to the same host nor retried
    assert elsewhere.requests == []  # the token went nowhere else
    assert leaks(everything(err)) == []


@pytest.mark.parametrize("status", REDIRECTS)
@pytest.mark.parametrize("action", list(ASYNC_ACTIONS))
def test_the_async_client_never_follows_a_redirect_either(
    server: RecordingServer, elsewhere: RecordingServer, status: int, action: str
) -> None:
    server.default = Reply(status=status, headers={"Location": _location("another host", server, elsewhere)})
    with pytest.raises(AhaChatAPIError) as caught:
        call_async(server, ASYNC_ACTIONS[action])
    assert caught.value.status == status and "redirect" in str(caught.value)
    assert len(server.requests) == 1 and elsewhere.requests == []
    assert leaks(everything(caught.value)) == []


@pytest.mark.parametrize("status", [300, 304, 305, 399])
def test_any_3xx_is_an_error(server: RecordingServer, status: int) -> None:
    server.default = Reply(status=status, body=b"")
    with pytest.raises(AhaChatAPIError) as caught:
        call_sync(server, SYNC_ACTIONS["send_text (POST, messages)"])
    assert caught.value.status == status and len(server.requests) == 1


# --------------------------------------------------------------------------- 2, 5. echoes and huge bodies


def _echo_bodies() -> dict[str, tuple[bytes | dict[str, Any], str | None]]:
    """Answers that echo the token (or a piece of it), at the old and new cut points and past them."""
    encoded = quote(TOKEN, safe="")
    cases: dict[str, tuple[bytes | dict[str, Any], str | None]] = {}
    for cut in (
        0,
        150,
        190,
        199,
        200,
        201,
        MAX_KEPT - 20,
        MAX_KEPT - 5,
        MAX_KEPT,
        4 * MAX_KEPT - 10,
        8 * MAX_KEPT - 7,
    ):
        cases[f"page, token at {cut}"] = (("x" * cut + TOKEN + " tail").encode(), None)
        cases[f"page, encoded token at {cut}"] = (("y" * cut + encoded).encode(), None)
        cases[f"message, token at {cut}"] = ({"success": False, "message": "m" * cut + TOKEN}, None)
    cases["page, the token's start"] = (f"<html>bad token {TOKEN[:12]}</html>".encode(), None)
    cases["page, the token's end"] = (f"<html>bad token ...{TOKEN[-10:]}</html>".encode(), None)
    cases["page, the token's middle"] = (f"<html>{TOKEN[5:20]}</html>".encode(), None)
    cases["message as a list"] = ({"success": False, "message": [TOKEN, {"k": TOKEN}]}, None)
    cases["query echoed"] = (f"GET /x?ahachat_token={TOKEN}&a=1".encode(), None)
    cases["20 MB page"] = (("z" * 20_000_000 + TOKEN).encode(), None)
    cases["20 MB message"] = ({"success": False, "message": TOKEN + "w" * 20_000_000}, None)
    cases["reason phrase"] = (b"nope", f"Bad {TOKEN}")
    return cases


ECHOES = _echo_bodies()


@pytest.mark.parametrize("status", [400, 404, 422, 500, 503, 429, 200])
@pytest.mark.parametrize("case", list(ECHOES))
def test_no_piece_of_the_token_survives_an_error_whatever_the_server_echoes(
    server: RecordingServer, status: int, case: str
) -> None:
    body, reason = ECHOES[case]
    if status == 200 and isinstance(body, bytes):
        body = {"success": False, "message": body.decode()}
    server.default = Reply(status=status, body=body, reason=reason)
    no_retry = RetryPolicy(max_retries=0)
    with pytest.raises(AhaChatError) as caught:
        call_sync(server, SYNC_ACTIONS["send_text (POST, messages)"], no_retry)
    text = everything(caught.value)
    assert leaks(text) == []
    # Bounded: a few KB of what the server sent, and the text says it was cut.
    assert len(str(caught.value)) <= 5 * MAX_KEPT
    assert caught.value.api_message is None or len(caught.value.api_message) <= MAX_KEPT + 60
    if "20 MB" in case:
        assert "[cut:" in str(caught.value)


@pytest.mark.parametrize(
    "case", ["page, token at 199", "20 MB page", "message, token at 1990", "reason phrase"]
)
def test_the_async_client_keeps_no_piece_of_the_token_either(server: RecordingServer, case: str) -> None:
    body, reason = ECHOES.get(case) or ({"success": False, "message": "m" * 1990 + TOKEN}, None)
    server.default = Reply(status=500, body=body, reason=reason)
    with pytest.raises(AhaChatError) as caught:
        call_async(server, ASYNC_ACTIONS["find_user"], RetryPolicy(max_retries=0))
    assert leaks(everything(caught.value)) == [] and len(str(caught.value)) <= 5 * MAX_KEPT


@pytest.mark.parametrize("limit", [50, 200, MAX_KEPT])
@pytest.mark.parametrize("offset", range(-12, 3))
def test_redact_first_then_cut_at_any_point(limit: int, offset: int) -> None:
    text = "a" * (limit + offset) + TOKEN + "b" * 10
    kept = bounded(text, TOKEN, limit)
    assert leaks(kept) == [] and len(kept) <= limit + 60
    assert redact(TOKEN[: MIN_FRAGMENT + 3], TOKEN) == "***"


# --------------------------------------------------------------------------- 3. a 2xx echoing the token


def _echoing_data() -> Any:
    return {
        "echo": f"your token is {TOKEN}",
        TOKEN: "as a key",
        "nested": [{"url": f"https://x/?ahachat_token={quote(TOKEN, safe='')}"}, TOKEN[:20], 3, None, True],
    }


@pytest.mark.parametrize("action", list(SYNC_ACTIONS))
def test_a_2xx_that_echoes_the_token_gives_data_without_it(server: RecordingServer, action: str) -> None:
    data = _echoing_data()
    if action.startswith("find_user"):
        data = {"messenger_user_id": USER, "first_name": TOKEN, "attributes": {"t": TOKEN}, **data}
    server.default = Reply(body={"success": True, "data": data})
    result = call_sync(server, SYNC_ACTIONS[action])
    dumped = json.dumps(result.model_dump(mode="json"))
    assert leaks(dumped) == []
    assert "***" in dumped


def test_the_async_client_gives_data_without_the_token(server: RecordingServer) -> None:
    server.default = Reply(body={"success": True, "data": {"messenger_user_id": USER, "first_name": TOKEN}})
    user = call_async(server, ASYNC_ACTIONS["find_user"])
    assert leaks(json.dumps(user.model_dump(mode="json"))) == []


# --------------------------------------------------------------------------- 4. DEBUG logs


def _hostile_answers(server: RecordingServer) -> list[Reply]:
    path_token = f"{server.url}/{TOKEN}/x"
    return [
        Reply(status=301, headers={"Location": path_token}),
        Reply(status=302, headers={"Location": f"/r?ahachat_token={TOKEN}"}),
        Reply(status=400, headers={"X-Debug": TOKEN, "Set-Cookie": f"t={TOKEN}"}, body=b"no"),
        Reply(status=500, reason=f"Broken {TOKEN}", body=b"no"),
        Reply(raw=f"HTTP/1.1 2OO {TOKEN}\r\nContent-Length: 0\r\n\r\n".encode()),
        Reply(raw=f"{TOKEN}\r\n\r\n".encode()),
        Reply(
            status=200,
            body={"success": True, "data": {"messenger_user_id": USER, "t": TOKEN}},
            headers={"X-Echo": TOKEN},
        ),
    ]


@pytest.mark.parametrize("index", range(7))
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_debug_logs_of_the_http_libraries_never_show_the_token(
    server: RecordingServer, caplog: pytest.LogCaptureFixture, index: int, kind: str
) -> None:
    answer = _hostile_answers(server)[index]
    server.responder = lambda recorded: answer
    caplog.set_level(logging.DEBUG)
    for name in ("urllib3", "urllib3.connectionpool", "httpx", "httpcore", "httpcore.http11"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    with pytest.raises(AhaChatError) if index < 6 else _nothing():
        if kind == "sync":
            call_sync(server, SYNC_ACTIONS["find_user (GET)"], RetryPolicy(max_retries=0))
        else:
            call_async(server, ASYNC_ACTIONS["find_user"], RetryPolicy(max_retries=0))
    lines = [f"{r.name}: {r.getMessage()}" for r in caplog.records]
    assert any(r.name.startswith(("urllib3", "httpcore", "httpx")) for r in caplog.records)  # they did log
    assert [line for line in lines if leaks(line)] == []
    assert len(server.requests) >= 1


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def test_the_log_filter_redacts_by_value_whatever_the_line(caplog: pytest.LogCaptureFixture) -> None:
    AhaChatClient(BOT, TOKEN, "http://127.0.0.1:1").close()  # a live token
    caplog.set_level(logging.DEBUG)
    logger = logging.getLogger("httpcore.http11")
    logger.setLevel(logging.DEBUG)
    for template, args in [
        ("headers %r", ([(b"Location", f"http://x/{TOKEN}".encode())],)),
        ("status line %s", (f"HTTP/1.1 200 {TOKEN[:9]}",)),
        ("%s", (quote(TOKEN, safe=""),)),
        (f"plain {TOKEN[-8:]}", ()),
    ]:
        logger.debug(template, *args)
    assert [r.getMessage() for r in caplog.records if leaks(r.getMessage())] == []


@pytest.mark.parametrize(
    "user", [{"t": TOKEN}, {"messenger_user_id": [TOKEN]}, {"messenger_user_id": USER, "tags": TOKEN}]
)
def test_a_user_that_cannot_be_read_is_an_error_without_the_answer(
    server: RecordingServer, user: Any
) -> None:
    server.default = Reply(body={"success": True, "data": user})
    with pytest.raises(AhaChatAPIError, match="cannot be read") as caught:
        call_sync(server, SYNC_ACTIONS["find_user (GET)"])
    assert leaks(everything(caught.value)) == []
