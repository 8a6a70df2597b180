"""The sandbox's JSON API steps: a block calls a URL when a customer reaches it, and shows the answer."""

from __future__ import annotations

import json
from urllib.parse import parse_qsl

import pytest
from helpers.recording_server import RecordingServer, Reply

from airflow_provider_ahachat.sandbox import SandboxServer
from airflow_provider_ahachat.sandbox.server import SandboxControlError

LAN = "3824547807572463"


@pytest.fixture
def target(server: RecordingServer) -> RecordingServer:
    """The server a JSON API step calls (the shared recording server)."""
    return server


def step(url: str, **more: object) -> dict[str, object]:
    return {
        "url": f"{url}/hook/{{{{messenger_user_id}}}}",
        "headers": {"X-AhaChat-Secret": "s3cret-header"},
        "body": {"messenger_user_id": "{{messenger_user_id}}", "order_code": "{{order_code}}", "n": 2},
        **more,
    }


def test_reaching_the_block_calls_the_url_with_the_customers_attributes_and_shows_the_answer(
    sandbox: SandboxServer, target: RecordingServer
) -> None:
    target.answer(
        Reply(body={"messages": [{"text": "Đơn {{x}} đang giao"}], "set_attributes": {"asked": "yes"}})
    )
    shown = sandbox.set_json_api("ask_order", [step(target.url)])
    assert shown["steps"][0]["headers"] == {"X-AhaChat-Secret": "***"}
    sandbox.update_user(LAN, attributes={"order_code": "DH10231"})
    since = max((e["seq"] for e in sandbox.outbox()), default=0)

    sandbox.update_user(LAN, run_block="ask_order")

    (request,) = target.requests
    assert (request.method, request.path) == ("POST", f"/hook/{LAN}")
    assert request.headers["X-AhaChat-Secret"] == "s3cret-header"
    assert request.headers["Content-Type"] == "application/json"
    assert request.json == {"messenger_user_id": LAN, "order_code": "DH10231", "n": 2}
    entries = sandbox.outbox(LAN, since=since)
    assert [e["kind"] for e in entries] == ["block", "json_api"]
    assert entries[1]["block_name"] == "ask_order"
    assert entries[1]["messages"] == [{"text": "Đơn {{x}} đang giao"}]
    assert sandbox.user(LAN)["attributes"]["asked"] == "yes"
    (call,) = sandbox.json_api_calls()
    assert (call["status"], call["error"], call["outbox_seq"]) == (200, None, entries[1]["seq"])
    assert "s3cret-header" not in json.dumps(call)
    assert "s3cret-header" not in json.dumps(sandbox.control("GET", "/json_api"))


def test_form_and_get_steps(sandbox: SandboxServer, target: RecordingServer) -> None:
    target.default = Reply(body={})
    sandbox.set_json_api(
        "menu",
        [step(target.url, format="form"), step(target.url, method="GET", body={"id": "{{first_name}}"})],
    )
    since = max((e["seq"] for e in sandbox.outbox()), default=0)
    sandbox.update_user(LAN, run_block="menu")
    form, get = target.requests
    assert form.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert dict(parse_qsl(form.body.decode())) == {
        "messenger_user_id": LAN,
        "order_code": "{{order_code}}",  # Lan has no such attribute: the template stays, as in AhaChat
        "n": "2",
    }
    assert (get.method, get.query) == ("GET", [("id", "Lan")])
    assert [e["kind"] for e in sandbox.outbox(LAN, since=since)] == ["block"]  # {} shows nothing
    assert [c["unresolved"] for c in sandbox.json_api_calls()] == [["order_code"], []]


def test_steps_of_a_block_reached_by_a_redirect_run_too(
    sandbox: SandboxServer, target: RecordingServer
) -> None:
    target.default = Reply(body={"messages": [{"text": "ok"}]})
    sandbox.set_json_api("delivery_received", [step(target.url)])
    sandbox.update_user(LAN, run_block="confirm_delivery")
    assert target.requests == []  # confirm_delivery itself redirects nowhere with a step
    sandbox.update_user(LAN, run_block="delivery_received")
    assert len(target.requests) == 1


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (Reply(status=500, body={"messages": [{"text": "no"}]}), "answered 500"),
        (Reply(body=["not", "an", "object"]), "not a JSON object"),
        (Reply(body={"messages": [{"nonsense": 1}]}), "not a dynamic message"),
        (Reply(drop=True), "Error"),
    ],
)
def test_a_failed_call_shows_nothing_and_is_logged(
    reply: Reply, error: str, sandbox: SandboxServer, target: RecordingServer
) -> None:
    target.answer(reply)
    sandbox.set_json_api("ask_order", [step(target.url, timeout=5)])
    since = max((e["seq"] for e in sandbox.outbox()), default=0)
    sandbox.update_user(LAN, run_block="ask_order")
    assert [e["kind"] for e in sandbox.outbox(LAN, since=since)] == ["block"]
    (call,) = sandbox.json_api_calls()
    assert error in call["error"]


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        ({"url": "ftp://x"}, "steps[0].url"),
        ({"url": "http://x", "method": "TRACE"}, "steps[0].method"),
        ({"url": "http://x", "headers": {"a b": "c"}}, "steps[0].headers"),
        ({"url": "http://x", "body": [1]}, "steps[0].body"),
        ({"url": "http://x", "format": "xml"}, "steps[0].format"),
        ({"url": "http://x", "timeout": 0}, "steps[0].timeout"),
        ({"url": "http://x", "retries": 3}, "unknown field"),
    ],
)
def test_a_bad_step_is_refused_naming_the_field(
    bad: dict[str, object], words: str, sandbox: SandboxServer
) -> None:
    with pytest.raises(SandboxControlError, match=words.replace("[", r"\[").replace("]", r"\]")):
        sandbox.set_json_api("ask_order", [bad])
    assert sandbox.control("GET", "/json_api") == {}


def test_steps_are_removed_and_reset(sandbox: SandboxServer, target: RecordingServer) -> None:
    sandbox.set_json_api("ask_order", [step(target.url)])
    assert list(sandbox.control("GET", "/json_api")) == ["ask_order"]
    assert "ask_order" in next(b for b in sandbox.control("GET", "/bots"))["blocks"]
    sandbox.set_json_api("ask_order", [])
    assert sandbox.control("GET", "/json_api") == {}
    sandbox.set_json_api("ask_order", [step(target.url)])
    sandbox.reset()
    assert sandbox.control("GET", "/json_api") == {}
    assert sandbox.json_api_calls() == []
