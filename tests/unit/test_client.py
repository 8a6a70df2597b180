"""The client against a recording server: the exact requests it sends, and how it reads every answer."""

from __future__ import annotations

import json
import logging
import pickle
import socket
import time
import traceback
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from helpers.recording_server import RecordingServer, Reply

from airflow_provider_ahachat.client import AhaChatClient, RetryPolicy
from airflow_provider_ahachat.exceptions import (
    AhaChatAPIError,
    AhaChatAuthError,
    AhaChatConnectionError,
    AhaChatError,
    AhaChatInvalidRequestError,
    AhaChatNotFoundError,
    AhaChatOutsideWindowError,
    AhaChatRateLimitError,
    AhaChatServerError,
    AhaChatTimeoutError,
    AhaChatValidationError,
)
from airflow_provider_ahachat.registry import ENDPOINTS

TOKEN = "0f3c9a7e5b1d4f2a8c6e0b9d7f5a3c1e2b4d6f8a0c2e4b6d8f0a2c4e6b8d0f2a"
BOT = "12404829"
USER = "3824547807572463"
FAST = RetryPolicy(max_retries=3, backoff_base=0.01, backoff_max=0.05, max_retry_time=5)


@pytest.fixture
def client(server: RecordingServer) -> Iterator[AhaChatClient]:
    with AhaChatClient(BOT, TOKEN, server.url, retry=FAST, read_timeout=2, connect_timeout=2) as c:
        yield c


def assert_no_token(*texts: str) -> None:
    for text in texts:
        assert TOKEN not in text
        assert TOKEN[:16] not in text


def full_text(err: BaseException) -> str:
    """Everything a log would show of an error: text, repr, traceback with its chain, pickled state."""
    return "\n".join(
        [
            str(err),
            repr(err),
            "".join(traceback.format_exception(err)),
            repr(pickle.loads(pickle.dumps(err)).__dict__),
        ]
    )


# --------------------------------------------------------------------------- the Broadcast API, exactly


def test_a_bound_action_addressed_to_each_customer_is_the_prepared_request(client: AhaChatClient) -> None:
    arguments = {"block_name": "shipping_update", "message_tag": "human_agent", "attributes": {"a": 1}}
    bound = client.bind("broadcast_block", arguments)
    for who in ({"user_id": USER}, {"phone": "0908 071 111"}):
        assert client.address(bound, **who) == client.prepare("broadcast_block", arguments, **who)
    with pytest.raises(AhaChatValidationError, match="give exactly one"):
        client.address(bound, user_id=USER, phone="0908 071 111")
    assert client.address(client.bind("check_connection")) == client.prepare("check_connection")


def test_broadcast_by_user_is_the_documented_request(client: AhaChatClient, server: RecordingServer) -> None:
    result = client.run(
        "broadcast_block",
        {
            "block_name": "Giao hàng",
            "message_tag": "HUMAN_AGENT",
            "attributes": {"order_id": "Đơn hàng #123", "ten": "Nguyễn Thị Lan", "so_luong": 2, "vip": True},
        },
        user_id=USER,
    )

    (req,) = server.requests
    assert req.method == "POST"
    assert req.path == f"/api/bots/{BOT}/users/{USER}/send"
    assert req.query == [
        ("ahachat_token", TOKEN),
        ("ahachat_message_tag", "HUMAN_AGENT"),
        ("ahachat_block_name", "Giao hàng"),
        ("order_id", "Đơn hàng #123"),
        ("ten", "Nguyễn Thị Lan"),
        ("so_luong", "2"),
        ("vip", "yes"),
    ]
    # UTF-8, percent-encoded, spaces as %20 and '#' escaped so it is not taken as a fragment.
    assert f"ahachat_block_name={quote('Giao hàng')}" in req.raw_path
    assert f"order_id={quote('Đơn hàng #123', safe='')}" in req.raw_path
    assert req.body == b""
    assert result.model_dump() == {"action": "broadcast_by_user", "user_id": USER, "phone": None, "data": {}}


def test_broadcast_by_phone_is_the_documented_request(client: AhaChatClient, server: RecordingServer) -> None:
    client.run(
        "broadcast_block", {"block_name": "welcome", "attributes": {"ma_don": "A1"}}, phone="+84 908.071-111"
    )

    (req,) = server.requests
    assert req.method == "POST"
    assert req.path == f"/api/bots/{BOT}/phones/send"
    assert req.query == [  # no tag by default: a standard message
        ("ahachat_token", TOKEN),
        ("ahachat_block_name", "welcome"),
        ("phone", "+84908071111"),
        ("ma_don", "A1"),
    ]


@pytest.mark.parametrize(
    ("call", "method", "path", "body"),
    [
        (lambda c: c.send(c.prepare("check_connection")), "GET", f"/api/bots/{BOT}", None),
        (
            lambda c: c.run("add_tags", {"tags": ["vip", "da_mua_hang"]}, user_id=USER),
            "POST",
            "tags",
            {"tags": ["vip", "da_mua_hang"]},
        ),
        (
            lambda c: c.run("remove_tags", {"tags": "vip"}, user_id=USER),
            "POST",
            "tags/remove",
            {"tags": ["vip"]},
        ),
        (
            lambda c: c.run(
                "add_attributes", {"attributes": '{"codeso": 99999, "s_d_t": "0908071111"}'}, user_id=USER
            ),
            "POST",
            "attributes",
            {"attributes": {"codeso": 99999, "s_d_t": "0908071111"}},
        ),
        (
            lambda c: c.run("reset_attributes", {"attributes": ["codeso"]}, user_id=USER),
            "POST",
            "attributes/reset",
            {"attributes": ["codeso"]},
        ),
        (
            lambda c: c.run("send_text", {"text": "Chào Lan!"}, user_id=USER),
            "POST",
            "messages",
            {"messages": [{"text": "Chào Lan!"}]},
        ),
        (
            lambda c: c.run(
                "send_message",
                {"message": [{"text": "a", "quick_replies": [{"title": "M", "block_name": "m"}]}]},
                user_id=USER,
            ),
            "POST",
            "messages",
            {"messages": [{"text": "a", "quick_replies": [{"title": "M", "block_name": "m"}]}]},
        ),
    ],
)
def test_provisional_endpoints(client, server, call, method, path, body) -> None:
    call(client)
    (req,) = server.requests
    assert req.method == method
    expected = path if path.startswith("/") else f"/api/bots/{BOT}/users/{USER}/{path}"
    assert req.path == expected
    assert req.query == [("ahachat_token", TOKEN)]
    assert req.json == body
    if body is not None:
        assert req.headers["Content-Type"] == "application/json"


def test_find_user_by_phone_and_by_id(client: AhaChatClient, server: RecordingServer) -> None:
    user = {
        "messenger_user_id": 3824547807572463,
        "first_name": "Lan",
        "tags": ["vip"],
        "attributes": {"a": 1},
    }
    server.answer(Reply(body={"success": True, "data": user}), Reply(body={"success": True, "data": [user]}))
    by_id = client.send(client.prepare("find_user", user_id=int(USER)))
    by_phone = client.send(client.prepare("find_user", phone="0908 071 111"))
    assert by_id.messenger_user_id == USER  # IDs stay strings, even when AhaChat sends a number
    assert by_phone.tags == ["vip"]
    assert [r.raw_path.split("?")[0] for r in server.requests] == [
        f"/api/bots/{BOT}/users/{USER}",
        f"/api/bots/{BOT}/users",
    ]
    assert server.requests[1].query == [("ahachat_token", TOKEN), ("phone", "+84908071111")]  # E.164
    assert "phone=%2B84908071111" in server.requests[1].raw_path  # the + survives the query string


def test_every_path_is_in_the_one_table() -> None:
    documented = {name for name, e in ENDPOINTS.items() if e.documented}
    assert documented == {"broadcast_by_user", "broadcast_by_phone"}
    assert {name for name, e in ENDPOINTS.items() if e.sends_message} == {
        "broadcast_by_user",
        "broadcast_by_phone",
        "send_message",
    }


def test_pooled_keep_alive(client: AhaChatClient, server: RecordingServer) -> None:
    for _ in range(5):
        client.run("add_tags", {"tags": "vip"}, user_id=USER)
    assert len({r.client_port for r in server.requests}) == 1


# --------------------------------------------------------------------------- answers and errors


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (400, AhaChatInvalidRequestError),
        (401, AhaChatAuthError),
        (403, AhaChatAuthError),
        (404, AhaChatNotFoundError),
        (422, AhaChatOutsideWindowError),
        (409, AhaChatAPIError),
    ],
)
def test_error_classes(client, server, status, error_class) -> None:
    # AhaChat's message is kept, but a token echoed in it is not.
    server.default = Reply(status=status, body={"success": False, "message": f"nope ahachat_token={TOKEN}"})
    with pytest.raises(error_class) as info:
        client.run("add_tags", {"tags": "vip"}, user_id=USER)
    err = info.value
    assert err.status == status
    assert err.api_message == "nope ahachat_token=***"
    assert len(server.requests) == 1  # not retried
    assert_no_token(full_text(err))


def test_success_false_in_a_2xx_is_an_error(client: AhaChatClient, server: RecordingServer) -> None:
    server.default = Reply(body={"success": False, "message": "block missing"})
    with pytest.raises(AhaChatAPIError, match="block missing"):
        client.run("broadcast_block", {"block_name": "x"}, user_id=USER)


def test_a_2xx_without_json_is_accepted(client: AhaChatClient, server: RecordingServer) -> None:
    server.default = Reply(body=b"OK")
    assert client.run("broadcast_block", {"block_name": "x"}, user_id=USER).data is None


def test_503_then_success_is_retried(client: AhaChatClient, server: RecordingServer) -> None:
    server.answer(Reply(status=503), Reply(status=503), Reply(body={"success": True, "data": {"ok": 1}}))
    assert client.run("send_text", {"text": "hi"}, user_id=USER).data == {"ok": 1}
    assert len(server.requests) == 3


@pytest.mark.parametrize("status", [502, 504])
def test_a_gateway_error_on_a_message_is_unknown_and_not_resent(
    client: AhaChatClient, server: RecordingServer, status: int
) -> None:
    server.answer(Reply(status=status))
    with pytest.raises(AhaChatServerError) as info:
        client.run("send_text", {"text": "hi"}, user_id=USER)
    assert info.value.outcome_unknown and "may or may not have been sent" in str(info.value)
    assert len(server.requests) == 1
    # Tags message nobody: safe to repeat.
    server.answer(Reply(status=status), Reply(body={"success": True, "data": None}))
    client.run("add_tags", {"tags": "x"}, user_id=USER)
    assert len(server.requests) == 3


def test_a_body_without_a_charset_is_read_as_utf8(client: AhaChatClient, server: RecordingServer) -> None:
    body = json.dumps({"success": True, "data": {"messenger_user_id": USER, "last_name": "Nguyễn Thị"}})
    server.answer(Reply(body=body.encode("utf-8"), headers={"Content-Type": "text/html"}))
    assert client.send(client.prepare("find_user", user_id=USER)).last_name == "Nguyễn Thị"


def test_429_honours_retry_after(client: AhaChatClient, server: RecordingServer) -> None:
    server.answer(Reply(status=429, headers={"Retry-After": "1"}))
    started = time.monotonic()
    client.run("broadcast_block", {"block_name": "x"}, user_id=USER)
    assert time.monotonic() - started >= 1.0
    assert len(server.requests) == 2


def test_429_gives_up_within_bounds(server: RecordingServer) -> None:
    server.default = Reply(
        status=429, headers={"Retry-After": "0"}, body={"success": False, "message": "slow down"}
    )
    policy = RetryPolicy(max_retries=2, backoff_base=0.01)
    with (
        AhaChatClient(BOT, TOKEN, server.url, retry=policy) as c,
        pytest.raises(AhaChatRateLimitError) as info,
    ):
        c.run("add_tags", {"tags": "vip"}, user_id=USER)
    assert len(server.requests) == 3
    assert info.value.retry_after == 0
    assert "after 3 attempts" in str(info.value)


def test_retry_after_longer_than_the_time_budget_is_not_waited(server: RecordingServer) -> None:
    server.default = Reply(status=429, headers={"Retry-After": "30"})
    policy = RetryPolicy(max_retries=5, max_retry_time=2)
    started = time.monotonic()
    with AhaChatClient(BOT, TOKEN, server.url, retry=policy) as c, pytest.raises(AhaChatRateLimitError):
        c.run("add_tags", {"tags": "vip"}, user_id=USER)
    assert time.monotonic() - started < 10  # waiting for Retry-After would take 30 s
    assert len(server.requests) == 1


def test_500_on_a_send_is_not_retried_and_says_the_outcome_is_unknown(client, server) -> None:
    server.default = Reply(status=500, body={"success": False, "message": "Facebook error"})
    with pytest.raises(AhaChatServerError) as info:
        client.run("send_text", {"text": "Chào"}, user_id=USER)
    assert info.value.outcome_unknown
    assert "outcome is unknown" in str(info.value)
    assert len(server.requests) == 1


def test_500_on_a_send_is_retried_when_asked(server: RecordingServer) -> None:
    server.answer(Reply(status=500))
    policy = RetryPolicy(backoff_base=0.01, retry_unknown_outcome=True)
    with AhaChatClient(BOT, TOKEN, server.url, retry=policy) as c:
        c.run("broadcast_block", {"block_name": "x"}, user_id=USER)
    assert len(server.requests) == 2


def test_500_on_an_idempotent_request_is_retried(client: AhaChatClient, server: RecordingServer) -> None:
    server.answer(Reply(status=500))
    client.run("add_tags", {"tags": "vip"}, user_id=USER)
    assert len(server.requests) == 2


def test_read_timeout_on_a_send_is_unknown_and_not_retried(server: RecordingServer) -> None:
    server.default = Reply(delay=1.0)
    with (
        AhaChatClient(BOT, TOKEN, server.url, retry=FAST, read_timeout=0.2) as c,
        pytest.raises(AhaChatTimeoutError) as info,
    ):
        c.run("send_text", {"text": "Chào"}, user_id=USER)
    assert info.value.outcome_unknown
    assert "may or may not have been sent" in str(info.value)
    assert len(server.requests) == 1
    assert_no_token(full_text(info.value))


def test_dropped_connection_on_a_send_is_unknown(client: AhaChatClient, server: RecordingServer) -> None:
    server.default = Reply(drop=True)
    with pytest.raises(AhaChatConnectionError) as info:
        client.run("broadcast_block", {"block_name": "x"}, user_id=USER)
    assert info.value.outcome_unknown
    assert len(server.requests) == 1
    assert_no_token(full_text(info.value))


def refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_connection_refused_is_retried_then_reported_without_the_token(caplog) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"http://127.0.0.1:{refused_port()}"
    with AhaChatClient(BOT, TOKEN, url, retry=FAST) as c, pytest.raises(AhaChatConnectionError) as info:
        c.run("send_text", {"text": "hi"}, user_id=USER)
    err = info.value
    assert not err.outcome_unknown
    assert "after 4 attempts" in str(err)
    assert err.__cause__ is None
    assert err.__context__ is None
    assert_no_token(full_text(err), caplog.text)
    assert "retrying" in caplog.text


def test_the_token_stays_out_of_debug_logs_and_reprs(client, server, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    client.run("add_tags", {"tags": "vip"}, user_id=USER)
    assert "POST /api/bots/" in caplog.text  # urllib3 logged the request...
    assert "ahachat_token=***" in caplog.text  # ...without the token
    assert_no_token(
        caplog.text, repr(client), repr(client.prepare("add_tags", {"tags": "vip"}, user_id=USER))
    )


# --------------------------------------------------------------------------- bad input sends nothing


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c: c.run("add_tags", {"tags": []}, user_id=USER), "tags: must name at least one tag"),
        (
            lambda c: c.run("add_tags", {"tags": ["vip", " "]}, user_id=USER),
            "tags[1]: a tag must be a non-empty string",
        ),
        (
            lambda c: c.run("add_tags", {"tags": "vip"}, user_id=3.824547807572463e15),
            "user_id: must be a string of digits, got the float",
        ),
        (lambda c: c.run("add_tags", {"tags": "vip"}, user_id=""), "user_id: must not be empty"),
        (
            lambda c: c.run(
                "broadcast_block", {"block_name": "b", "attributes": {"phone": "1"}}, phone="+84908071111"
            ),
            "attributes.phone: attribute name 'phone' is reserved",
        ),
        (
            lambda c: c.run("add_attributes", {"attributes": {"a": None}}, user_id=USER),
            "attributes.a: values must be text, numbers",
        ),
        (
            lambda c: c.run("add_attributes", {"attributes": {"a": {1, 2}}}, user_id=USER),
            "attributes.a: values must be text, numbers",
        ),
        (
            lambda c: c.run("add_attributes", {"attributes": "{not json"}, user_id=USER),
            "attributes: is a string but not valid JSON",
        ),
        (
            lambda c: c.run("add_attributes", {"attributes": {"": 1}}, user_id=USER),
            "attribute names must be non-empty",
        ),
        (
            lambda c: c.run("reset_attributes", {"attributes": []}, user_id=USER),
            "attributes: must name at least one attribute name",
        ),
        (lambda c: c.run("send_text", {"text": ""}, user_id=USER), "text: must not be empty"),
        (
            lambda c: c.run("send_text", {"text": "x" * 2001}, user_id=USER),
            "text: at most 2000 characters, got 2001",
        ),
        (
            lambda c: c.run("send_message", {"message": "[{"}, user_id=USER),
            "message: is a string but not valid JSON",
        ),
        (
            lambda c: c.run("broadcast_block", {"block_name": ""}, user_id=USER),
            "block_name: must be a non-empty string",
        ),
        (
            lambda c: c.run("broadcast_block", {"block_name": "b", "message_tag": "PROMO"}, user_id=USER),
            "message_tag: 'PROMO' is not a",
        ),
        (
            lambda c: c.run("broadcast_block", {"block_name": "b"}, user_id=USER, phone="+84908071111"),
            "give exactly one",
        ),
        (lambda c: c.run("broadcast_block", {"block_name": "b"}), "user_id, phone: give exactly one of them"),
        (
            lambda c: c.run("broadcast_block", {"block_name": "b"}, phone="12345"),
            "phone: '12345' is not a phone number",
        ),
        (
            lambda c: c.run("broadcast_block", {"block_name": "b"}, phone="(090) 807 1111"),
            "is not a phone number",
        ),
        (
            lambda c: c.run(
                "broadcast_block",
                {"block_name": "b", "attributes": {"ahachat_block_name": "x"}},
                user_id=USER,
            ),
            "'ahachat_block_name' is reserved by the Broadcast API",
        ),
        (lambda c: c.send(c.prepare("find_user")), "give exactly one"),
    ],
)
def test_bad_input_fails_before_sending(client, server, call, message) -> None:
    with pytest.raises(AhaChatValidationError) as info:
        call(client)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)
    assert server.requests == []


def test_client_refuses_an_incomplete_configuration() -> None:
    with pytest.raises(AhaChatValidationError, match="bot_id: the Bot ID must not be empty"):
        AhaChatClient("", TOKEN)
    with pytest.raises(AhaChatValidationError, match="base_url: must be an http or https URL"):
        AhaChatClient(BOT, TOKEN, "ftp://x")


def test_errors_survive_pickling() -> None:
    err = AhaChatRateLimitError("slow", retry_after=3.0, status=429)
    back = pickle.loads(pickle.dumps(err))
    assert (type(back), str(back), back.retry_after, back.status) == (AhaChatRateLimitError, "slow", 3.0, 429)
    assert isinstance(pickle.loads(pickle.dumps(AhaChatValidationError(["a", "b"]))), AhaChatError)
