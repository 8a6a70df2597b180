"""The client against the sandbox: every action, every error class, and retries that deliver once."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from airflow_provider_ahachat.client import AhaChatClient, RetryPolicy
from airflow_provider_ahachat.exceptions import (
    AhaChatAuthError,
    AhaChatInvalidRequestError,
    AhaChatNotFoundError,
    AhaChatOutsideWindowError,
    AhaChatRateLimitError,
    AhaChatRecipientUnavailableError,
    AhaChatServerError,
)
from airflow_provider_ahachat.registry import ACTIONS
from airflow_provider_ahachat.registry import ENDPOINTS as ALL_ENDPOINTS
from airflow_provider_ahachat.request import build_request
from airflow_provider_ahachat.sandbox import SandboxServer

LAN = "3824547807572463"  # wrote 30 minutes ago
BAO = "5310298476123984"  # wrote 3 days ago
MINH = "4102938475610293"  # wrote 2 hours ago
ANH = "3069285714039285"  # unsubscribed
OTHER_BOT = "20517736"
FAST = RetryPolicy(max_retries=5, backoff_base=0.01, backoff_max=0.05, max_retry_time=10)


@pytest.fixture
def client(sandbox: SandboxServer) -> Iterator[AhaChatClient]:
    with AhaChatClient(sandbox.bot_id, sandbox.token, sandbox.url, retry=FAST) as c:
        yield c


def test_every_action(client: AhaChatClient, sandbox: SandboxServer) -> None:
    assert client.send(client.prepare("check_connection"))["name"] == "Shop Thời Trang Lan Anh"
    lan = client.send(client.prepare("find_user", phone="0908 071 111"))
    assert lan.messenger_user_id == LAN
    assert (lan.last_name, lan.first_name) == ("Nguyễn Thị", "Lan")
    assert client.send(client.prepare("find_user", user_id=LAN)).phone == "+84908071111"

    client.run("add_tags", {"tags": ["mùa_hè", "vip"]}, user_id=LAN)
    client.run("remove_tags", {"tags": "khach_quen"}, user_id=LAN)
    client.run(
        "add_attributes",
        {"attributes": {"codeso": 99999, "ghi_chu": "Giao giờ hành chính", "vip": True}},
        user_id=LAN,
    )
    client.run("reset_attributes", {"attributes": ["city"]}, user_id=LAN)
    after = client.send(client.prepare("find_user", user_id=LAN))
    assert "mùa_hè" in after.tags
    assert "khach_quen" not in after.tags
    assert after.attributes["codeso"] == 99999
    assert after.attributes["ghi_chu"] == "Giao giờ hành chính"
    assert "city" not in after.attributes

    client.run("send_text", {"text": "Chào Lan!"}, user_id=LAN)
    client.run(
        "send_message",
        {"message": {"messages": [{"text": "Chọn size:"}], "set_attributes": {"size_asked": "yes"}}},
        user_id=LAN,
    )
    result = client.run(
        "broadcast_block",
        {"block_name": "shipping_update", "attributes": {"order_id": "Đơn #9", "tracking_number": "GHN1"}},
        phone="+84 912 345 678",
    )
    assert result.phone == "+84912345678"
    delivered = sandbox.outbox()
    assert [(e["messenger_user_id"], e["kind"]) for e in delivered] == [
        (LAN, "text"),
        (LAN, "dynamic"),
        (MINH, "broadcast"),
    ]
    assert "Đơn #9" in delivered[2]["text"]
    assert client.send(client.prepare("find_user", user_id=LAN)).attributes["size_asked"] == "yes"


def test_every_error_class(client: AhaChatClient, sandbox: SandboxServer) -> None:
    # 400: the sandbox's own check, reached by a request built without the client's validation.
    bad = build_request(ALL_ENDPOINTS["add_tags"], sandbox.bot_id, user_id=LAN, json_body={"tags": []})
    with pytest.raises(AhaChatInvalidRequestError) as info:
        client.send(bad)
    assert info.value.status == 400
    with pytest.raises(AhaChatNotFoundError, match="404"):
        client.send(client.prepare("find_user", user_id="1111111111111111"))
    with pytest.raises(AhaChatNotFoundError):
        client.run("broadcast_block", {"block_name": "no_such_block"}, user_id=LAN)
    with pytest.raises(AhaChatNotFoundError):
        client.run("broadcast_block", {"block_name": "welcome"}, phone="+84999999999")
    with pytest.raises(AhaChatOutsideWindowError) as window:
        client.run("send_text", {"text": "Chào"}, user_id=BAO)
    assert window.value.status == 422
    with pytest.raises(AhaChatOutsideWindowError):
        client.run("broadcast_block", {"block_name": "welcome"}, user_id=BAO)
    with pytest.raises(AhaChatRecipientUnavailableError):
        client.run("broadcast_block", {"block_name": "welcome"}, user_id=ANH)
    with (
        AhaChatClient(sandbox.bot_id, "0" * 64, sandbox.url) as wrong,
        pytest.raises(AhaChatAuthError) as auth,
    ):
        wrong.send(wrong.prepare("check_connection"))
    assert auth.value.status == 401
    other_token = sandbox.tokens[OTHER_BOT]
    with (
        AhaChatClient(sandbox.bot_id, other_token, sandbox.url) as other,
        pytest.raises(AhaChatAuthError) as auth,
    ):
        other.send(other.prepare("check_connection"))
    assert auth.value.status == 403
    assert sandbox.outbox() == []


def test_a_persons_reply_outside_the_window_reaches_the_customer_within_7_days(
    client: AhaChatClient, sandbox: SandboxServer
) -> None:
    client.run("broadcast_block", {"block_name": "welcome", "message_tag": "HUMAN_AGENT"}, user_id=BAO)
    assert [e["kind"] for e in sandbox.outbox(BAO)] == ["broadcast"]


def test_injected_503s_are_retried_and_deliver_once(client: AhaChatClient, sandbox: SandboxServer) -> None:
    sandbox.configure(fail_next=[503, 503, 503])
    client.run("send_text", {"text": "Chào"}, user_id=LAN)
    assert len(sandbox.outbox(LAN)) == 1
    assert len([r for r in sandbox.request_log() if r["path"].endswith("/messages")]) == 4


def test_a_504_after_delivery_is_not_resent(client: AhaChatClient, sandbox: SandboxServer) -> None:
    sandbox.configure(fail_next=[{"status": 504, "deliver": True}])
    with pytest.raises(AhaChatServerError) as info:
        client.run("send_text", {"text": "Chào"}, user_id=LAN)
    assert info.value.outcome_unknown
    assert len(sandbox.outbox(LAN)) == 1


def test_a_500_after_delivery_is_not_resent(client: AhaChatClient, sandbox: SandboxServer) -> None:
    sandbox.configure(fail_next=[{"status": 500, "deliver": True}])
    with pytest.raises(AhaChatServerError) as info:
        client.run("broadcast_block", {"block_name": "welcome"}, user_id=LAN)
    assert info.value.outcome_unknown
    assert len(sandbox.outbox(LAN)) == 1  # it was delivered, and only once


def test_rate_limits_are_waited_out(client: AhaChatClient, sandbox: SandboxServer) -> None:
    sandbox.configure(rate_limit=5, retry_after=1)
    started = time.monotonic()
    for _ in range(8):
        client.run("add_tags", {"tags": "vip"}, user_id=LAN)
    assert time.monotonic() - started >= 0.5
    statuses = [r["status"] for r in sandbox.request_log(limit=100)]
    assert statuses.count(200) == 8
    assert 429 in statuses


def test_rate_limit_past_the_time_budget_is_an_error(sandbox: SandboxServer) -> None:
    sandbox.configure(rate_limit=1, retry_after=30)
    policy = RetryPolicy(max_retry_time=2)
    with AhaChatClient(sandbox.bot_id, sandbox.token, sandbox.url, retry=policy) as c:
        c.run("add_tags", {"tags": "vip"}, user_id=LAN)
        with pytest.raises(AhaChatRateLimitError) as info:
            c.run("add_tags", {"tags": "vip"}, user_id=LAN)
    assert info.value.retry_after is not None
    assert info.value.retry_after >= 30


@pytest.mark.parametrize("name", list(ACTIONS))
def test_the_sandbox_serves_every_action_of_the_registry(
    client: AhaChatClient, sandbox: SandboxServer, name: str
) -> None:
    """
    Each action of the registry, with its example arguments, prepared by the client and sent for
    real, reaches the sandbox route its endpoint names and succeeds: by user ID and, where the
    action has one, by phone.
    """
    action = ACTIONS[name]
    ways = [{"user_id": LAN}, *([{"phone": "+84908071111"}] if action.by_phone else [])]
    for way in ways if action.addresses_customer else [{}]:
        client.send(client.prepare(name, action.example(), **way))
    routes = sandbox.stats()["by_route"]
    assert {f"{e.method} {e.path}" for e in action.endpoints} <= {
        route for route, statuses in routes.items() if set(statuses) == {"200"}
    }


def test_every_endpoint_of_the_registry_has_a_route_in_the_sandbox(sandbox: SandboxServer) -> None:
    """Nothing of the registry is missing from the sandbox's app, and nothing else is under /api."""
    from airflow_provider_ahachat.sandbox import create_app

    paths = [(route, str(getattr(route, "path", ""))) for route in create_app().routes]
    routes = {
        f"{method} {path}"
        for route, path in paths
        if path.startswith("/api/")
        for method in getattr(route, "methods", ())
    }
    assert routes == {str(endpoint) for endpoint in ALL_ENDPOINTS.values()}
