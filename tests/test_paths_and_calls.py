"""
Correctable paths (the connection's ``endpoints``), the generic call, finding users by phone and
resetting attributes by name: on the wire (a recording server), against the sandbox, inside Airflow.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from recording_server import RecordingServer, Reply

from airflow_provider_ahachat.bulk import BulkRunner
from airflow_provider_ahachat.client import AhaChatClient, AsyncAhaChatClient, RetryPolicy
from airflow_provider_ahachat.exceptions import (
    AhaChatAPIError,
    AhaChatNotFoundError,
    AhaChatServerError,
    AhaChatValidationError,
)
from airflow_provider_ahachat.registry import ENDPOINTS, endpoint_table
from airflow_provider_ahachat.sandbox import SandboxServer

TOKEN = "0f3c9a7e5b1d4f2a8c6e0b9d7f5a3c1e2b4d6f8a0c2e4b6d8f0a2c4e6b8d0f2a"
BOT = "12404829"
USER = "3824547807572463"
LAN = "3824547807572463"  # in the sandbox's seed: tags khach_quen and vip, attribute city
FAST = RetryPolicy(max_retries=2, backoff_base=0.01, backoff_max=0.02, max_retry_time=5)
CONN = "aha"


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    srv = RecordingServer().start()
    yield srv
    srv.stop()


def client_for(server: RecordingServer, endpoints: Any = None) -> AhaChatClient:
    return AhaChatClient(BOT, TOKEN, server.url, retry=FAST, read_timeout=2, endpoints=endpoints)


# --------------------------------------------------------------------------- 5. paths users can correct


def test_an_override_changes_that_endpoint_only(server: RecordingServer) -> None:
    overrides = {"add_tags": "put /api/v2/bots/{bot_id}/customers/{user_id}/labels"}
    with client_for(server, overrides) as client:
        client.run("add_tags", {"tags": ["khách_quen", "vip"]}, user_id=USER)
        client.run("remove_tags", {"tags": "vip"}, user_id=USER)
    added, removed = server.requests
    assert (added.method, added.path) == ("PUT", f"/api/v2/bots/{BOT}/customers/{USER}/labels")
    assert added.json == {"tags": ["khách_quen", "vip"]}
    assert added.query == [("ahachat_token", TOKEN)]
    assert (removed.method, removed.path) == ("POST", f"/api/bots/{BOT}/users/{USER}/tags/remove")


def test_every_endpoint_can_be_corrected(server: RecordingServer) -> None:
    overrides = {name: f"PATCH /v9{spec.path}/x" for name, spec in ENDPOINTS.items()}
    server.default = Reply(body={"success": True, "data": {"messenger_user_id": USER}})
    with client_for(server, json.dumps(overrides)) as client:  # a JSON string, as the form stores it
        client.send(client.prepare("check_connection"))
        client.send(client.prepare("find_user", phone="0908 071 111"))
        client.run(
            "broadcast_block",
            {"block_name": "Giao hàng", "attributes": {"ma_don": "Đơn #1"}},
            phone="0908071111",
        )
        client.run("broadcast_block", {"block_name": "Giao hàng"}, user_id=USER)
        client.run("reset_attributes", {"attributes": ["city"]}, user_id=USER)
    paths = [(r.method, r.path) for r in server.requests]
    assert paths == [
        ("PATCH", f"/v9/api/bots/{BOT}/x"),
        ("PATCH", f"/v9/api/bots/{BOT}/users/x"),
        ("PATCH", f"/v9/api/bots/{BOT}/phones/send/x"),
        ("PATCH", f"/v9/api/bots/{BOT}/users/{USER}/send/x"),
        ("PATCH", f"/v9/api/bots/{BOT}/users/{USER}/attributes/reset/x"),
    ]
    # The query and body are the action's, whatever the path.
    assert server.requests[1].query == [("ahachat_token", TOKEN), ("phone", "+84908071111")]
    assert dict(server.requests[2].query)["ma_don"] == "Đơn #1"
    assert server.requests[4].json == {"attributes": ["city"]}


def test_overrides_reach_the_bulk_engine_and_the_async_client(server: RecordingServer) -> None:
    overrides = {"add_tags": "POST /v2/{bot_id}/{user_id}/tags", "find_user": "GET /v2/{bot_id}/u/{user_id}"}
    server.default = Reply(body={"success": True, "data": {"messenger_user_id": USER}})
    with client_for(server, overrides) as client:
        summary = BulkRunner(client, client.bind("add_tags", tags="vip")).run([USER, "1234567890"])
        assert summary["outcomes"] == {"delivered": 2}

        async def find() -> str:
            async with AsyncAhaChatClient.like(client) as aclient:
                return (await aclient.send(aclient.prepare("find_user", user_id=USER))).messenger_user_id

        assert asyncio.run(find()) == USER
    assert sorted(r.path for r in server.requests) == [
        f"/v2/{BOT}/1234567890/tags",
        f"/v2/{BOT}/{USER}/tags",
        f"/v2/{BOT}/u/{USER}",
    ]


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        (
            {"add_tag": "POST /x/{user_id}"},
            "endpoints.add_tag: not an endpoint; use one of broadcast_by_user, broadcast_by_phone, "
            "check_connection, find_user, find_user_by_phone, add_tags, remove_tags, add_attributes, "
            "reset_attributes, send_message",
        ),
        (
            {"add_tags": "POST /api/bots/{bot}/users/{user_id}/tags"},
            "endpoints.add_tags: unknown placeholder {bot}; a path may hold {bot_id}, {user_id}",
        ),
        ({"add_tags": "POST /x/{user_id!r}"}, "endpoints.add_tags: unknown placeholder {user_id!r}"),
        ({"add_tags": "POST /x/{user_id"}, "endpoints.add_tags: "),
        ({"add_tags": "POST /api/bots/{bot_id}/tags"}, "endpoints.add_tags: must hold {user_id}"),
        (
            {"check_connection": "GET /bots/{user_id}"},
            "endpoints.check_connection: has no user to put in {user_id}",
        ),
        (
            {"add_tags": "SEND /x/{user_id}"},
            "endpoints.add_tags: the method must be one of GET, POST, PUT, PATCH",
        ),
        (
            {"add_tags": "/x/{user_id}"},
            "endpoints.add_tags: must be a method and a path, e.g. POST /api/bots/",
        ),
        ({"add_tags": "POST x/{user_id}"}, "endpoints.add_tags: the path must start with /"),
        ({"add_tags": "POST //evil.example/{user_id}"}, "endpoints.add_tags: the path must start with /"),
        ({"add_tags": "POST /x/{user_id}?a=1"}, "hold no query or fragment"),
        ({"add_tags": 3}, "endpoints.add_tags: must be a method and a path"),
        ('["add_tags"]', "endpoints: must be an object of endpoint name to"),
        ("{not json", "endpoints: is a string but not valid JSON"),
    ],
)
def test_a_bad_override_fails_when_the_client_is_built(
    server: RecordingServer, overrides: Any, problem: str
) -> None:
    with pytest.raises(AhaChatValidationError) as info:
        client_for(server, overrides)
    assert problem in str(info.value)
    assert server.requests == []


def test_every_bad_override_is_reported_at_once() -> None:
    with pytest.raises(AhaChatValidationError) as info:
        endpoint_table({"nope": "GET /", "add_tags": "GET /{x}/{user_id}", "find_user": "GET /u/{user_id}"})
    assert [p.split(":")[0] for p in info.value.problems] == ["endpoints.nope", "endpoints.add_tags"]
    assert (
        endpoint_table(None) is ENDPOINTS
        and endpoint_table("") is ENDPOINTS
        and endpoint_table({}) is ENDPOINTS
    )


def test_an_override_works_against_the_sandbox(sandbox: SandboxServer) -> None:
    # Send add_tags to the sandbox's remove path: the tag goes away, so the override took effect.
    overrides = {"add_tags": "POST /api/bots/{bot_id}/users/{user_id}/tags/remove"}
    with AhaChatClient(sandbox.bot_id, sandbox.token, sandbox.url, endpoints=overrides) as client:
        client.run("add_tags", {"tags": "vip"}, user_id=LAN)
    assert "vip" not in sandbox.user(LAN)["tags"]


# --------------------------------------------------------------------------- 6. a generic call


def test_call_adds_the_token_and_returns_the_whole_answer(server: RecordingServer) -> None:
    answer = {"success": True, "data": [{"id": 1}], "paging": {"next": "Trang 2"}, "echo": f"t={TOKEN}"}
    server.default = Reply(body=answer)
    with client_for(server) as client:
        got = client.call(
            "get",
            "/api/bots/{bot_id}/chiến dịch",
            params={"trang": 2, "tên": "Nguyễn Thị Lan", "vip": True, "bỏ": None, "tag": ["a", "b"]},
        )
        posted = client.call("POST", "/api/bots/{bot_id}/sequences", [("x", "1")], {"sequence": "Chăm sóc"})
    assert got == {**answer, "echo": "t=***"}
    assert posted == got
    first, second = server.requests
    assert first.method == "GET"
    assert first.raw_path.startswith(f"/api/bots/{BOT}/{quote('chiến dịch')}?ahachat_token=")
    assert first.query == [
        ("ahachat_token", TOKEN),
        ("trang", "2"),
        ("tên", "Nguyễn Thị Lan"),
        ("vip", "true"),
        ("tag", "a"),
        ("tag", "b"),
    ]
    assert (second.method, second.path, second.json) == (
        "POST",
        f"/api/bots/{BOT}/sequences",
        {"sequence": "Chăm sóc"},
    )
    assert second.query == [("ahachat_token", TOKEN), ("x", "1")]


def test_call_answers_text_and_empty_bodies(server: RecordingServer) -> None:
    with client_for(server) as client:
        server.script.extend([Reply(body=f"OK {TOKEN}"), Reply(status=204, body="")])
        assert client.call("GET", "/ping") == "OK ***"
        assert client.call("DELETE", "/api/bots/{bot_id}/x") is None


def test_call_has_the_errors_and_retries_of_every_action(server: RecordingServer) -> None:
    with client_for(server) as client:
        server.script.append(Reply(status=404, body={"success": False, "result": f"Không có {TOKEN}"}))
        with pytest.raises(AhaChatNotFoundError) as info:
            client.call("GET", "/api/bots/{bot_id}/nope")
        assert info.value.api_message == "Không có ***"
        assert TOKEN not in repr(info.value) and TOKEN not in str(info.value)

        server.script.extend([Reply(status=429, headers={"Retry-After": "0"}), Reply(body={"ok": 1})])
        assert client.call("POST", "/x") == {"ok": 1}

        server.script.extend([Reply(status=500), Reply(body={"ok": 2})])
        assert client.call("GET", "/x") == {"ok": 2}  # a read is retried after a 500
        server.script.extend([Reply(status=500), Reply(body={"ok": 3})])
        with pytest.raises(AhaChatServerError, match="outcome is unknown"):
            client.call("POST", "/x")  # a write may have messaged someone: not resent
        server.script.clear()
        server.script.extend([Reply(status=500), Reply(body={"ok": 4})])
        assert client.call("POST", "/x", sends_message=False) == {"ok": 4}
        server.script.clear()
        server.default = Reply(status=200, body={"success": False, "error": "Bot bị khóa"})
        with pytest.raises(AhaChatAPIError, match="AhaChat refused POST /x: Bot bị khóa"):
            client.call("POST", "/x")
    assert [r.method for r in server.requests] == [
        "GET",
        "POST",
        "POST",
        "GET",
        "GET",
        "POST",
        "POST",
        "POST",
        "POST",
    ]


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (("FETCH", "/x"), "method: must be one of GET, POST, PUT, PATCH, DELETE, got 'FETCH'"),
        (("GET", "https://evil.example/x"), "path: must be a path from the root"),
        (("GET", "//evil.example/x"), "path: must be a path from the root"),
        (("GET", "/x?ahachat_token=1"), "path: must hold no query or fragment"),
        (("GET", "/x", {"ahachat_token": "t"}), "params.ahachat_token: the connection adds the token"),
        (("GET", "/x", {"AhaChat_Token[]": "t"}), "params.AhaChat_Token[]: the connection adds the token"),
        (("GET", "/x", {"a": {"b": 1}}), "params.a: a query value must be text, a number or a boolean"),
        (("GET", "/x", 3), "params: must be a mapping or name/value pairs"),
        (("POST", "/x", None, {"a": float("nan")}), "json: cannot be sent as JSON"),
        (("POST", "/x", None, {"a": object()}), "json: cannot be sent as JSON"),
    ],
)
def test_call_refuses_bad_input_before_sending(
    server: RecordingServer, args: tuple[Any, ...], problem: str
) -> None:
    with client_for(server) as client, pytest.raises(AhaChatValidationError) as info:
        client.call(*args)
    assert problem in str(info.value)
    assert server.requests == []


# --------------------------------------------------------------------------- 7. finding users by phone


def test_a_phone_several_users_share_is_an_error_saying_how_many(server: RecordingServer) -> None:
    users = [{"messenger_user_id": str(n) * 16, "first_name": "Lan"} for n in (1, 2, 3)]
    with client_for(server) as client:
        server.script.append(Reply(body={"success": True, "data": users}))
        with pytest.raises(AhaChatAPIError) as info:
            client.send(client.prepare("find_user", phone="0908 071 111"))
        assert str(info.value) == (
            "AhaChat has 3 users with phone +84908071111 (1111111111111111, 2222222222222222, "
            "3333333333333333); find the customer by user_id instead"
        )
        assert not isinstance(info.value, AhaChatNotFoundError)
        server.script.append(Reply(body={"success": True, "data": users[:1]}))
        assert client.send(client.prepare("find_user", phone="0908071111")).messenger_user_id == "1" * 16
        server.script.append(Reply(body={"success": True, "data": []}))
        with pytest.raises(AhaChatNotFoundError, match="AhaChat knows no user with phone"):
            client.send(client.prepare("find_user", phone="0908071111"))


# --------------------------------------------------------------------------- inside Airflow


def sandbox_connection(sandbox: SandboxServer, **extra: Any) -> dict[str, Any]:
    parts = urlsplit(sandbox.url)
    return {
        "conn_type": "ahachat",
        "host": parts.hostname,
        "port": parts.port,
        "schema": parts.scheme,
        "login": sandbox.bot_id,
        "password": sandbox.token,
        "extra": extra,
    }


def new_dag(dag_id: str) -> Any:
    from airflow.sdk import DAG

    return DAG(dag_id, schedule=None, default_args={"ahachat_conn_id": CONN, "retries": 0})


def check_no_token(result: Any, sandbox: SandboxServer) -> None:
    errors = "\n".join(t.error_text or "" for t in result.tasks.values())
    for text in (result.log, json.dumps(result.xcoms, default=str), errors):
        assert sandbox.token not in text


@pytest.mark.usefixtures("airflow_db")
def test_operators_use_the_connections_endpoints_and_refuse_bad_ones(
    dag_runner: Any, sandbox: SandboxServer
) -> None:
    from airflow_provider_ahachat.operators.ahachat import AddTagsOperator

    with new_dag("endpoints_override") as dag:
        AddTagsOperator(task_id="tag", user_id=LAN, tags="vip")
    overrides = {"add_tags": "POST /api/bots/{bot_id}/users/{user_id}/tags/remove"}
    result = dag_runner(dag, {CONN: sandbox_connection(sandbox, endpoints=json.dumps(overrides))})
    assert result.succeeded, result.summary()
    assert "vip" not in sandbox.user(LAN)["tags"]
    check_no_token(result, sandbox)

    before = len(sandbox.request_log(limit=1000))
    result = dag_runner(dag, {CONN: sandbox_connection(sandbox, endpoints={"add_tag": "POST /x/{user_id}"})})
    assert result.task_states == {"tag": "failed"}, result.summary()
    error = result.tasks["tag"].error_text or ""
    assert f"connection '{CONN}': extra field endpoints.add_tag: not an endpoint; use one of" in error
    assert len(sandbox.request_log(limit=1000)) == before  # nothing was sent


@pytest.mark.usefixtures("airflow_db")
def test_hook_call_and_the_api_operator(dag_runner: Any, sandbox: SandboxServer, monkeypatch: Any) -> None:
    from airflow_provider_ahachat.hooks.ahachat import AhaChatHook
    from airflow_provider_ahachat.operators.ahachat import AhaChatApiOperator

    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN.upper()}", json.dumps(sandbox_connection(sandbox)))
    answer = AhaChatHook(CONN).call("GET", "/api/bots/{bot_id}/users", params={"phone": "0908 071 111"})
    assert answer["success"] is True and answer["data"]["messenger_user_id"] == LAN

    with new_dag("api_operator") as dag:
        AhaChatApiOperator(
            task_id="find",
            method="GET",
            path="/api/bots/{bot_id}/users/{{ dag_run.conf.get('uid', '" + LAN + "') }}",
        )
        AhaChatApiOperator(
            task_id="tag",
            method="POST",
            path="/api/bots/{bot_id}/users/" + LAN + "/tags",
            json={"tags": ["{{ 'mùa_' ~ 'hè' }}"]},
        )
        AhaChatApiOperator(task_id="bad", method="GET", path="/x", query={"ahachat_token": "t"})
    result = dag_runner(dag, {CONN: sandbox_connection(sandbox)})
    assert result.task_states == {"find": "success", "tag": "success", "bad": "failed"}, result.summary()
    assert result.xcoms["find"]["data"]["first_name"] == "Lan"
    assert "mùa_hè" in result.xcoms["tag"]["data"]["tags"]
    assert "params.ahachat_token: the connection adds the token" in (result.tasks["bad"].error_text or "")
    check_no_token(result, sandbox)


@pytest.mark.usefixtures("airflow_db")
def test_find_user_not_found_skips_or_fails(dag_runner: Any, sandbox: SandboxServer) -> None:
    from airflow.sdk import DAG

    from airflow_provider_ahachat.operators.ahachat import FindUserOperator

    with DAG("find_not_found", schedule=None, default_args={"ahachat_conn_id": CONN, "retries": 0}) as dag:
        FindUserOperator(task_id="skip", phone="0999 888 777", not_found="skip")
        FindUserOperator(task_id="fail", phone="0999 888 777")
        FindUserOperator(task_id="found", phone="0908 071 111", not_found="skip")
    result = dag_runner(dag, {CONN: sandbox_connection(sandbox)})
    assert result.task_states == {"skip": "skipped", "fail": "failed", "found": "success"}, result.summary()
    assert result.xcoms["found"]["messenger_user_id"] == LAN

    # A Bot ID AhaChat does not know is no reason to skip.
    with DAG("find_unknown_bot", schedule=None, default_args={"ahachat_conn_id": CONN, "retries": 0}) as dag:
        FindUserOperator(task_id="skip", phone="0999 888 777", not_found="skip")
    wrong_bot = {**sandbox_connection(sandbox), "login": "99999999"}
    result = dag_runner(dag, {CONN: wrong_bot})
    assert result.task_states == {"skip": "failed"}, result.summary()

    with pytest.raises(AhaChatValidationError, match='not_found: must be "fail" or "skip", got \'ignore\''):
        FindUserOperator(task_id="x", phone="0908071111", not_found="ignore")  # type: ignore[arg-type]


@pytest.mark.usefixtures("airflow_db")
def test_reset_attributes_takes_names(dag_runner: Any, sandbox: SandboxServer) -> None:
    from airflow_provider_ahachat.operators.ahachat import ResetAttributesOperator

    sandbox.update_user(LAN, attributes={"ngày_giao": "30/11/2026", "ghi_chú": "Giao giờ hành chính"})
    with new_dag("reset_names") as dag:
        ResetAttributesOperator(task_id="names", user_id=LAN, names=["ngày_giao"])
        ResetAttributesOperator(task_id="attributes", user_id=LAN, attributes="ghi_chú")
        ResetAttributesOperator(task_id="both", user_id=LAN, names=["a"], attributes=["a"])
        ResetAttributesOperator(task_id="neither", user_id=LAN)
    result = dag_runner(dag, {CONN: sandbox_connection(sandbox)})
    assert result.task_states == {
        "names": "success",
        "attributes": "success",
        "both": "failed",
        "neither": "failed",
    }, result.summary()
    attributes = sandbox.user(LAN)["attributes"]
    assert "ngày_giao" not in attributes and "ghi_chú" not in attributes
    assert "names, attributes: give one of them" in (result.tasks["both"].error_text or "")
    assert "names: required by the action 'reset_attributes'" in (result.tasks["neither"].error_text or "")
