"""The AhaChat sandbox, over real HTTP: the contract's endpoints, its errors, and the control API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_provider_ahachat.models import User
from airflow_provider_ahachat.sandbox import (
    DEFAULT_SEED_PATH,
    READY_PREFIX,
    SandboxControlError,
    SandboxProcess,
    SandboxServer,
    SandboxState,
    SeedError,
    read_seed,
)

BOT = "12404829"
OTHER_BOT = "20517736"
LAN = "3824547807572463"  # 30 min ago, +84908071111, has order_id DH10231
MINH = "4102938475610293"  # 2 h ago
BAO = "5310298476123984"  # 3 days ago: outside the window
TRANG = "1846203957182736"  # 10 min ago, phone seeded in national form 0935123456
ANH_UNSUBSCRIBED = "3069285714039285"
THU = "8403629158473629"  # the other bot's user
UNKNOWN_USER = "1111222233334444"

_session = requests.Session()
_session.trust_env = False  # never through a proxy: the sandbox is on loopback


def call(
    sandbox: SandboxServer,
    method: str,
    path: str,
    *,
    params: dict[str, Any] | None = None,
    token: str | None = "default",
    bot: str = BOT,
    **kwargs: Any,
) -> requests.Response:
    """Call the AhaChat API of the sandbox; ``path`` is under ``/api/bots/<bot>``."""
    query = dict(params or {})
    if token is not None:
        query["ahachat_token"] = sandbox.token if token == "default" else token
    return _session.request(method, f"{sandbox.url}/api/bots/{bot}{path}", params=query, timeout=10, **kwargs)


def ok_data(response: requests.Response) -> Any:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    return body["data"]


def is_broadcast(response: requests.Response) -> bool:
    return (response.request.path_url or "").split("?")[0].endswith("/send")


def sent(response: requests.Response) -> str:
    """A Broadcast API success, in Chatfuel's shape ``{"success": true, "result": "..."}``."""
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"success", "result"} and body["success"] is True, body
    return str(body["result"])


def error(response: requests.Response, status: int) -> str:
    """The reason of a refusal: ``result`` for the Broadcast API (Chatfuel's shape), else ``message``."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False
    if is_broadcast(response):
        assert "message" not in body and "data" not in body, body
        return str(body["result"])
    return str(body["message"])


def broadcast(
    sandbox: SandboxServer, user_id: str, block: str, tag: str | None = None, **attrs: Any
) -> requests.Response:
    """A Broadcast API request by user ID, without a tag unless given; ``attrs`` become attributes."""
    params = {"ahachat_block_name": block, **attrs}
    if tag is not None:
        params["ahachat_message_tag"] = tag
    return call(sandbox, "POST", f"/users/{user_id}/send", params=params)


def meta_error(response: requests.Response, status: int, code: int) -> str:
    """Messenger's refusal as the sandbox passes it on: Meta's text, and Meta's object in ``error``."""
    text = error(response, status)
    meta = response.json()["error"]
    assert (meta["code"], meta["type"], meta["message"]) == (code, "OAuthException", text)
    assert text.startswith(f"(#{code}) ") and meta["fbtrace_id"]
    return text


# --------------------------------------------------------------------------- connection and users


def test_check_connection(sandbox: SandboxServer) -> None:
    assert ok_data(call(sandbox, "GET", "")) == {"id": BOT, "name": "Shop Thời Trang Lan Anh"}


def test_find_user_by_id_returns_every_field_with_string_ids(sandbox: SandboxServer) -> None:
    data = ok_data(call(sandbox, "GET", f"/users/{LAN}"))
    assert set(data) == {
        "messenger_user_id",
        "first_name",
        "last_name",
        "gender",
        "locale",
        "profile_pic_url",
        "phone",
        "email",
        "tags",
        "attributes",
        "last_interaction_at",
        "subscribed",
    }
    assert data["messenger_user_id"] == LAN
    assert (data["first_name"], data["last_name"], data["phone"]) == ("Lan", "Nguyễn Thị", "+84908071111")
    user = User.model_validate(data)
    assert user.last_interaction_at is not None
    assert user.last_interaction_at.tzinfo is not None
    age = datetime.now(timezone.utc) - user.last_interaction_at
    assert timedelta(minutes=29) < age < timedelta(minutes=32)  # seeded as 30 minutes ago


@pytest.mark.parametrize(
    "phone", ["+84908071111", "0908071111", "090 807 1111", "090.807.1111", "84908071111"]
)
def test_find_user_by_phone_in_any_vietnamese_form(sandbox: SandboxServer, phone: str) -> None:
    assert ok_data(call(sandbox, "GET", "/users", params={"phone": phone}))["messenger_user_id"] == LAN


def test_find_user_seeded_with_a_national_phone_by_international_form(sandbox: SandboxServer) -> None:
    data = ok_data(call(sandbox, "GET", "/users", params={"phone": "+84935123456"}))
    assert data["messenger_user_id"] == TRANG
    assert data["phone"] == "0935123456"


def test_find_user_errors(sandbox: SandboxServer) -> None:
    assert "not found" in error(call(sandbox, "GET", f"/users/{UNKNOWN_USER}"), 404)
    assert "user_id" in error(call(sandbox, "GET", "/users/abc"), 400)
    assert "phone" in error(call(sandbox, "GET", "/users"), 400)
    assert "not a phone number" in error(call(sandbox, "GET", "/users", params={"phone": "12ab"}), 400)
    error(call(sandbox, "GET", "/users", params={"phone": "+84999999999"}), 404)
    # A user of another bot is not a user of this one.
    error(call(sandbox, "GET", f"/users/{THU}"), 404)


# --------------------------------------------------------------------------- authentication


def test_authentication(sandbox: SandboxServer) -> None:
    other_token = sandbox.tokens[OTHER_BOT]
    assert "missing" in error(call(sandbox, "GET", "", token=None), 401)
    assert "invalid" in error(call(sandbox, "GET", "", token="0" * 64), 401)
    assert "does not belong" in error(call(sandbox, "GET", "", token=other_token), 403)
    assert "not found" in error(call(sandbox, "GET", "", bot="99999999"), 404)
    # The other bot's own token works for it.
    assert ok_data(call(sandbox, "GET", "", bot=OTHER_BOT, token=other_token))["id"] == OTHER_BOT


def test_every_endpoint_requires_the_token(sandbox: SandboxServer) -> None:
    endpoints = [
        ("GET", ""),
        ("GET", f"/users/{LAN}"),
        ("GET", "/users?phone=0908071111"),
        ("POST", f"/users/{LAN}/send?ahachat_message_tag=HUMAN_AGENT&ahachat_block_name=welcome"),
        ("POST", "/phones/send?ahachat_block_name=welcome&phone=0908071111"),
        ("POST", f"/users/{LAN}/tags"),
        ("POST", f"/users/{LAN}/tags/remove"),
        ("POST", f"/users/{LAN}/attributes"),
        ("POST", f"/users/{LAN}/attributes/reset"),
        ("POST", f"/users/{LAN}/messages"),
    ]
    for method, path in endpoints:
        error(call(sandbox, method, path, token="wrong", json={}), 401)
    assert sandbox.outbox() == []


# --------------------------------------------------------------------------- tags and attributes


def test_add_and_remove_tags(sandbox: SandboxServer) -> None:
    data = ok_data(
        call(sandbox, "POST", f"/users/{MINH}/tags", json={"tags": ["vip", "da_mua_hang", "mùa_hè"]})
    )
    assert data["tags"] == ["da_mua_hang", "vip", "mùa_hè"]  # no duplicate, order kept
    data = ok_data(
        call(sandbox, "POST", f"/users/{MINH}/tags/remove", json={"tags": ["da_mua_hang", "absent"]})
    )
    assert data["tags"] == ["vip", "mùa_hè"]
    assert sandbox.user(MINH)["tags"] == ["vip", "mùa_hè"]


def test_tag_errors(sandbox: SandboxServer) -> None:
    assert "tags" in error(call(sandbox, "POST", f"/users/{MINH}/tags", json={"tags": []}), 400)
    assert "tags[1]" in error(call(sandbox, "POST", f"/users/{MINH}/tags", json={"tags": ["a", ""]}), 400)
    assert "body" in error(call(sandbox, "POST", f"/users/{MINH}/tags", data=b"not json"), 400)
    assert "body" in error(call(sandbox, "POST", f"/users/{MINH}/tags", json=["vip"]), 400)
    error(call(sandbox, "POST", f"/users/{UNKNOWN_USER}/tags", json={"tags": ["vip"]}), 404)


def test_add_and_reset_attributes(sandbox: SandboxServer) -> None:
    attributes = {"codeso": 99999, "s_d_t": "0908071111", "ghi_chu": "Giao giờ hành chính", "vip": True}
    data = ok_data(call(sandbox, "POST", f"/users/{MINH}/attributes", json={"attributes": attributes}))
    # Stored as AhaChat types them: a boolean is yes/no.
    assert data["attributes"] == {"city": "Hà Nội", "customer_code": "KH0002", **attributes, "vip": "yes"}
    data = ok_data(
        call(sandbox, "POST", f"/users/{MINH}/attributes/reset", json={"attributes": ["codeso", "never_set"]})
    )
    assert "codeso" not in data["attributes"]
    assert data["attributes"]["ghi_chu"] == "Giao giờ hành chính"


def test_attribute_errors(sandbox: SandboxServer) -> None:
    message = error(
        call(sandbox, "POST", f"/users/{MINH}/attributes", json={"attributes": {"AhaChat_Token": "1"}}), 400
    )
    assert "reserved" in message
    assert "AhaChat_Token" in message
    null = {"attributes": {"order": None}}
    assert "attributes.order" in error(call(sandbox, "POST", f"/users/{MINH}/attributes", json=null), 400)
    assert "attributes" in error(call(sandbox, "POST", f"/users/{MINH}/attributes", json={}), 400)
    reset = {"attributes": ["ahachat_token"]}
    assert "reserved" in error(call(sandbox, "POST", f"/users/{MINH}/attributes/reset", json=reset), 400)
    error(call(sandbox, "POST", f"/users/{UNKNOWN_USER}/attributes", json={"attributes": {"a": 1}}), 404)
    assert sandbox.user(MINH)["attributes"] == {"city": "Hà Nội", "customer_code": "KH0002"}


# --------------------------------------------------------------------------- messages


def test_send_text_inside_the_window(sandbox: SandboxServer) -> None:
    data = ok_data(
        call(sandbox, "POST", f"/users/{LAN}/messages", json={"messages": [{"text": "Chào Lan!"}]})
    )
    assert data["messenger_user_id"] == LAN
    assert data["messages_sent"] == 1
    [entry] = sandbox.outbox(LAN)
    assert entry["kind"] == "text"
    assert entry["messages"] == [{"text": "Chào Lan!"}]
    assert entry["text"] == "Chào Lan!"
    assert entry["block_name"] is None
    assert entry["message_tag"] is None
    assert entry["seq"] == data["outbox_seq"] == 1


def test_send_dynamic_message_sets_attributes_and_runs_redirect_blocks(sandbox: SandboxServer) -> None:
    message = {
        "messages": [
            {"text": "Chọn size:", "quick_replies": [{"title": "M", "block_name": "size_m"}]},
            {"attachment": {"type": "image", "payload": {"url": "https://example.com/a.png"}}},
        ],
        "set_attributes": {"size": "XL"},
        "redirect_to_blocks": ["after_size"],
    }
    ok_data(call(sandbox, "POST", f"/users/{LAN}/messages", json=message))
    [entry] = sandbox.outbox(LAN)
    assert entry["kind"] == "dynamic"
    assert entry["blocks"] == ["after_size"]
    assert entry["messages"][:2] == message["messages"]
    assert entry["messages"][2] == {"text": "Cảm ơn Lan! Shop sẽ gợi ý các mẫu size XL cho bạn."}
    assert entry["text"].splitlines()[0] == "Chọn size: [M]"
    assert sandbox.user(LAN)["attributes"]["size"] == "XL"


def test_malformed_message_is_400_naming_each_field(sandbox: SandboxServer) -> None:
    bad = {
        "messages": [
            {"text": ""},
            {"attachment": {"type": "image", "payload": {"url": "http://example.com/a.bmp"}}},
            {
                "attachment": {
                    "type": "template",
                    "payload": {
                        "template_type": "button",
                        "text": "Chọn",
                        "buttons": [{"type": "web_url", "url": "https://e.com", "title": "x" * 21}],
                    },
                }
            },
        ]
    }
    response = call(sandbox, "POST", f"/users/{LAN}/messages", json=bad)
    message = error(response, 400)
    problems = response.json()["problems"]
    assert any(p.startswith("messages[0].text") for p in problems)
    assert any(p.startswith("messages[1].attachment.payload.url") for p in problems)
    assert any(p.startswith("messages[2].attachment.payload.buttons[0].title") for p in problems)
    assert "3 problems" in message
    assert "messages" in error(call(sandbox, "POST", f"/users/{LAN}/messages", json={"messages": []}), 400)
    assert "body" in error(call(sandbox, "POST", f"/users/{LAN}/messages", data=b"{oops"), 400)
    assert sandbox.outbox() == []


def test_message_outside_the_window_or_unsubscribed_is_metas_refusal(sandbox: SandboxServer) -> None:
    text = {"messages": [{"text": "Xin chào"}]}
    response = call(sandbox, "POST", f"/users/{BAO}/messages", json=text)
    assert meta_error(response, 422, 10) == "(#10) This message is sent outside of allowed window"
    assert response.json()["error"]["error_subcode"] == 2018278
    response = call(sandbox, "POST", f"/users/{ANH_UNSUBSCRIBED}/messages", json=text)
    assert meta_error(response, 422, 551) == "(#551) This person isn't available right now"
    error(call(sandbox, "POST", f"/users/{UNKNOWN_USER}/messages", json=text), 404)
    redirect = {"messages": [{"text": "x"}], "redirect_to_blocks": ["no_such_block"]}
    error(call(sandbox, "POST", f"/users/{LAN}/messages", json=redirect), 404)
    assert sandbox.outbox() == []


def test_customer_reply_reopens_the_window(sandbox: SandboxServer) -> None:
    text = {"messages": [{"text": "Cảm ơn bạn đã trả lời"}]}
    error(call(sandbox, "POST", f"/users/{BAO}/messages", json=text), 422)
    user = sandbox.update_user(BAO, touch=True)
    moment = datetime.fromisoformat(user["last_interaction_at"].replace("Z", "+00:00"))
    assert datetime.now(timezone.utc) - moment < timedelta(seconds=10)
    ok_data(call(sandbox, "POST", f"/users/{BAO}/messages", json=text))


# --------------------------------------------------------------------------- broadcasts


def test_broadcast_saves_query_attributes_before_the_block_runs(sandbox: SandboxServer) -> None:
    # Lan already has order_id DH10231: the query's value must win, and reach the rendered block.
    result = sent(
        broadcast(sandbox, LAN, "shipping_update", order_id="DH-2024-0815", tracking_number="GHN12345")
    )
    assert result == (f"Block 'shipping_update' sent to user {LAN} without a tag: 1 message(s), outbox #1")
    [entry] = sandbox.outbox(LAN)
    assert entry["kind"] == "broadcast"
    assert entry["block_name"] == "shipping_update"
    assert entry["message_tag"] is None
    assert entry["text"] == ("Đơn hàng DH-2024-0815 đã được giao cho đơn vị vận chuyển, mã vận đơn GHN12345.")
    assert entry["attributes"] == {"order_id": "DH-2024-0815", "tracking_number": "GHN12345"}
    assert entry["unresolved"] == []
    attributes = sandbox.user(LAN)["attributes"]
    assert attributes["order_id"] == "DH-2024-0815"
    assert attributes["tracking_number"] == "GHN12345"


def test_broadcast_reaches_users_outside_the_window_only_as_a_persons_reply(sandbox: SandboxServer) -> None:
    meta_error(broadcast(sandbox, BAO, "confirm_delivery", order_id="DH777"), 422, 10)
    sent(broadcast(sandbox, BAO, "confirm_delivery", tag="HUMAN_AGENT", order_id="DH777"))
    [entry] = sandbox.outbox(BAO)
    assert entry["text"] == "Chào Bảo, bạn đã nhận được đơn hàng DH777 chưa? [Đã nhận | Chưa nhận]"


def test_broadcast_vietnamese_query_values_round_trip(sandbox: SandboxServer) -> None:
    note = "Giao trước 17h – Đường Nguyễn Huệ, Quận 1 & tầng 3"
    sent(
        broadcast(sandbox, LAN, "shipping_update", order_id="Đơn #123", tracking_number="Mã 9", ghi_chu=note)
    )
    user = sandbox.user(LAN)
    assert user["attributes"]["ghi_chu"] == note
    assert user["attributes"]["order_id"] == "Đơn #123"
    assert "Đơn hàng Đơn #123 đã" in sandbox.outbox(LAN)[0]["text"]
    logged = sandbox.request_log(1)[0]
    assert logged["query"]["ghi_chu"] == note


def test_broadcast_leaves_unknown_placeholders_visible(sandbox: SandboxServer) -> None:
    sent(broadcast(sandbox, MINH, "shipping_update", order_id="DH1"))
    [entry] = sandbox.outbox(MINH)
    assert "{{tracking_number}}" in entry["text"]
    assert entry["unresolved"] == ["tracking_number"]


def test_broadcast_runs_redirect_blocks(sandbox: SandboxServer) -> None:
    sent(broadcast(sandbox, MINH, "welcome"))
    [entry] = sandbox.outbox(MINH)
    assert entry["blocks"] == ["welcome", "menu"]
    assert entry["text"].splitlines() == [
        "Chào Minh! Cảm ơn bạn đã nhắn tin cho Shop Thời Trang Lan Anh.",
        "Bạn muốn xem gì hôm nay? [Chọn size áo | Hàng mới về | Gọi shop]",
    ]


def test_broadcast_by_phone(sandbox: SandboxServer) -> None:
    params = {
        "ahachat_block_name": "shipping_update",
        "phone": "0935 123 456",
        "order_id": "DH55",
        "tracking_number": "VN01",
    }
    assert f"sent to user {TRANG} " in sent(call(sandbox, "POST", "/phones/send", params=params))
    [entry] = sandbox.outbox(TRANG)
    assert entry["text"] == "Đơn hàng DH55 đã được giao cho đơn vị vận chuyển, mã vận đơn VN01."
    # The phone is the lookup, not an attribute.
    assert "phone" not in sandbox.user(TRANG)["attributes"]
    assert entry["attributes"] == {"order_id": "DH55", "tracking_number": "VN01"}


def test_broadcast_by_phone_errors(sandbox: SandboxServer) -> None:
    base = {"ahachat_message_tag": "HUMAN_AGENT", "ahachat_block_name": "welcome"}
    assert "phone" in error(call(sandbox, "POST", "/phones/send", params=base), 400)
    error(call(sandbox, "POST", "/phones/send", params={**base, "phone": "not a phone"}), 400)
    assert "no user with phone" in error(
        call(sandbox, "POST", "/phones/send", params={**base, "phone": "+84999000111"}), 404
    )
    unsubscribed = {**base, "phone": "+84901234567"}
    meta_error(call(sandbox, "POST", "/phones/send", params=unsubscribed), 422, 551)
    outside = {"ahachat_block_name": "welcome", "phone": "0903 456 789"}  # Bảo, 3 days ago, no tag
    meta_error(call(sandbox, "POST", "/phones/send", params=outside), 422, 10)
    assert sandbox.outbox() == []


def test_broadcast_errors_change_nothing(sandbox: SandboxServer) -> None:
    before = sandbox.user(LAN)
    assert "ahachat_message_tag" in error(broadcast(sandbox, LAN, "welcome", tag="PROMOTION", x="1"), 400)
    meta_error(broadcast(sandbox, LAN, "welcome", tag="account_update", x="1"), 400, 100)
    meta_error(broadcast(sandbox, BAO, "welcome", x="1"), 422, 10)
    params = {"ahachat_message_tag": "HUMAN_AGENT", "x": "1"}
    assert "ahachat_block_name" in error(call(sandbox, "POST", f"/users/{LAN}/send", params=params), 400)
    assert "block 'nope' not found" in error(broadcast(sandbox, LAN, "nope", x="1"), 404)
    error(broadcast(sandbox, UNKNOWN_USER, "welcome", x="1"), 404)
    meta_error(broadcast(sandbox, ANH_UNSUBSCRIBED, "welcome", x="1"), 422, 551)
    assert sandbox.user(LAN) == before
    assert "x" not in sandbox.user(ANH_UNSUBSCRIBED)["attributes"]
    assert "x" not in sandbox.user(BAO)["attributes"]
    assert sandbox.outbox() == []


def test_broadcast_rejects_reserved_attribute_names(sandbox: SandboxServer) -> None:
    # Every ahachat_* name is AhaChat's own, in any case.
    message = error(broadcast(sandbox, LAN, "welcome", AHACHAT_NOTE="x"), 400)
    assert "reserved" in message
    # A reserved name given twice means an attribute took that name.
    url = (
        f"{sandbox.url}/api/bots/{BOT}/users/{LAN}/send?ahachat_token={sandbox.token}"
        "&ahachat_message_tag=HUMAN_AGENT&ahachat_block_name=welcome&ahachat_block_name=menu"
    )
    assert "reserved" in error(_session.post(url, timeout=10), 400)
    assert "attributes" in error(
        call(
            sandbox,
            "POST",
            f"/users/{LAN}/send?=x&ahachat_message_tag=HUMAN_AGENT&ahachat_block_name=welcome",
        ),
        400,
    )
    assert sandbox.outbox() == []


def test_broadcast_tag_is_case_insensitive_like_the_provider(sandbox: SandboxServer) -> None:
    assert "with the tag HUMAN_AGENT" in sent(broadcast(sandbox, LAN, "welcome", tag="human_agent"))
    assert sandbox.outbox(LAN)[-1]["message_tag"] == "HUMAN_AGENT"


# --------------------------------------------------------------------------- knobs


def test_rate_limit_answers_429_with_retry_after(sandbox: SandboxServer) -> None:
    assert sandbox.configure(rate_limit=2, retry_after=1)["rate_limit"] == 2
    responses = [call(sandbox, "GET", "") for _ in range(6)]
    limited = [r for r in responses if r.status_code == 429]
    assert responses[0].status_code == 200
    assert limited
    for response in limited:
        assert response.json() == {"success": False, "message": "rate limited"}
        assert int(response.headers["Retry-After"]) >= 1
    time.sleep(int(limited[-1].headers["Retry-After"]))
    ok_data(call(sandbox, "GET", ""))
    assert sandbox.stats()["by_status"]["429"] == len(limited)
    assert sandbox.request_log(1)[0]["note"] is None
    assert any(entry["note"] == "rate_limited" for entry in sandbox.request_log())


def test_fail_next_injects_errors_in_order(sandbox: SandboxServer) -> None:
    sandbox.configure(fail_next=[503, 500, 429])
    assert "injected" in error(call(sandbox, "GET", ""), 503)
    error(call(sandbox, "GET", ""), 500)
    response = call(sandbox, "GET", "")
    error(response, 429)
    assert response.headers["Retry-After"] == "1"
    ok_data(call(sandbox, "GET", ""))
    assert sandbox.config()["fail_next"] == []


def test_injected_error_does_not_deliver_by_default(sandbox: SandboxServer) -> None:
    sandbox.configure(fail_next=[500])
    error(call(sandbox, "POST", f"/users/{LAN}/messages", json={"messages": [{"text": "Một"}]}), 500)
    assert sandbox.outbox() == []
    assert sandbox.request_log(1)[0]["note"] == "injected"


def test_injected_error_after_processing_delivers(sandbox: SandboxServer) -> None:
    sandbox.configure(fail_next=[{"status": 500, "deliver": True}])
    error(call(sandbox, "POST", f"/users/{LAN}/messages", json={"messages": [{"text": "Một"}]}), 500)
    assert [entry["text"] for entry in sandbox.outbox(LAN)] == ["Một"]
    sandbox.configure(deliver_before_fail=True, fail_next=[502])
    error(call(sandbox, "POST", f"/users/{LAN}/tags", json={"tags": ["da_xu_ly"]}), 502)
    assert "da_xu_ly" in sandbox.user(LAN)["tags"]
    assert sandbox.request_log(1)[0]["note"] == "injected_after_processing"


def test_error_rate(sandbox: SandboxServer) -> None:
    sandbox.configure(error_rate=1.0, error_status=502)
    for _ in range(3):
        error(call(sandbox, "GET", ""), 502)
    sandbox.configure(error_rate=0)
    ok_data(call(sandbox, "GET", ""))
    assert sandbox.stats()["by_route"]["GET /api/bots/{bot_id}"] == {"200": 1, "502": 3}


def test_latency_does_not_block_other_requests(sandbox: SandboxServer) -> None:
    sandbox.configure(latency_ms=1000)
    started = time.perf_counter()
    ok_data(call(sandbox, "GET", ""))
    assert time.perf_counter() - started >= 1.0
    results: list[int] = []

    def one() -> None:
        with requests.Session() as session:
            session.trust_env = False
            url = f"{sandbox.url}/api/bots/{BOT}"
            results.append(session.get(url, params={"ahachat_token": sandbox.token}, timeout=10).status_code)

    threads = [threading.Thread(target=one) for _ in range(5)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [200] * 5
    # Five 1 s requests overlap: one after another they would take 5 s; a busy machine adds far less.
    assert time.perf_counter() - started < 3.5
    # The control API is never slowed down.
    started = time.perf_counter()
    sandbox.stats()
    assert time.perf_counter() - started < 0.9


def test_config_rejects_bad_knobs(sandbox: SandboxServer) -> None:
    for knobs in (
        {"nope": 1},
        {"error_rate": 2},
        {"error_status": 200},
        {"fail_next": [700]},
        {"retry_after": -1},
        {"error_status": [503, 200]},
        {"messenger_rules": "2024"},
        {"answer_keys": {"blocks": "redirect_to_blocks"}},
        {"answer_keys": {"messages": "set_attributes"}},
    ):
        with pytest.raises(SandboxControlError) as caught:
            sandbox.configure(**knobs)
        assert caught.value.status == 400
        assert next(iter(knobs)) in caught.value.message
    assert sandbox.config() == {
        "latency_ms": 0.0,
        "rate_limit": 0.0,
        "retry_after": 1,
        "error_rate": 0.0,
        "error_status": 503,
        "deliver_before_fail": False,
        "fail_next": [],
        "messenger_rules": "2026",
        "answer_keys": {
            "messages": "messages",
            "set_attributes": "set_attributes",
            "redirect_to_blocks": "redirect_to_blocks",
        },
    }


# --------------------------------------------------------------------------- control API


def test_reset_restores_the_seed(sandbox: SandboxServer) -> None:
    ok_data(call(sandbox, "POST", f"/users/{LAN}/tags", json={"tags": ["moi"]}))
    sent(broadcast(sandbox, LAN, "welcome"))
    sandbox.update_user(BAO, touch=True, subscribed=False)
    sandbox.configure(latency_ms=5, fail_next=[503])
    sandbox.reset()
    assert "moi" not in sandbox.user(LAN)["tags"]
    assert sandbox.user(BAO)["subscribed"] is True
    assert sandbox.outbox() == []
    assert sandbox.request_log() == []
    assert sandbox.stats()["total"] == 0
    assert sandbox.config()["fail_next"] == []
    assert sandbox.config()["latency_ms"] == 0
    sent(broadcast(sandbox, LAN, "welcome"))
    assert sandbox.outbox()[0]["seq"] == 1


def test_outbox_filters(sandbox: SandboxServer) -> None:
    sent(broadcast(sandbox, LAN, "welcome"))
    sent(broadcast(sandbox, MINH, "welcome"))
    sent(broadcast(sandbox, LAN, "menu"))
    assert [e["seq"] for e in sandbox.outbox()] == [1, 2, 3]
    assert [e["seq"] for e in sandbox.outbox(LAN)] == [1, 3]
    assert [e["seq"] for e in sandbox.outbox(since=1)] == [2, 3]
    assert [e["seq"] for e in sandbox.outbox(limit=1)] == [3]
    assert sandbox.outbox(bot_id=OTHER_BOT) == []
    entry = sandbox.outbox()[0]
    assert entry["bot_id"] == BOT
    assert isinstance(entry["messenger_user_id"], str)
    datetime.fromisoformat(entry["time"].replace("Z", "+00:00"))


def test_customer_taps_a_quick_reply(sandbox: SandboxServer) -> None:
    sent(broadcast(sandbox, BAO, "confirm_delivery", tag="HUMAN_AGENT", order_id="DH9"))
    user = sandbox.update_user(BAO, run_block="delivery_received")
    assert user["attributes"]["delivery_confirmed"] == "yes"
    last = sandbox.outbox(BAO)[-1]
    assert last["kind"] == "block"
    assert last["block_name"] == "delivery_received"
    assert last["text"] == "Cảm ơn Bảo đã xác nhận! Chúc bạn hài lòng với sản phẩm."
    # Tapping counts as an interaction: the window is open again.
    ok_data(call(sandbox, "POST", f"/users/{BAO}/messages", json={"messages": [{"text": "Cảm ơn!"}]}))


def test_patch_user(sandbox: SandboxServer) -> None:
    user = sandbox.update_user(
        MINH,
        attributes={"size": "L"},
        reset_attributes=["customer_code"],
        add_tags=["khach_quen"],
        remove_tags=["da_mua_hang"],
        last_interaction_minutes_ago=60 * 25,
        phone="0912 000 111",
    )
    assert user["attributes"] == {"city": "Hà Nội", "size": "L"}
    assert user["tags"] == ["khach_quen"]
    assert user["phone"] == "0912 000 111"
    assert (
        ok_data(call(sandbox, "GET", "/users", params={"phone": "+84912000111"}))["messenger_user_id"] == MINH
    )
    error(call(sandbox, "GET", "/users", params={"phone": "+84912345678"}), 404)
    error(call(sandbox, "POST", f"/users/{MINH}/messages", json={"messages": [{"text": "x"}]}), 422)
    for changes in ({"nope": 1}, {"attributes": {"ahachat_x": "1"}}, {"run_block": "nope"}, {"touch": "yes"}):
        with pytest.raises(SandboxControlError) as caught:
            sandbox.update_user(MINH, **changes)
        assert caught.value.status in (400, 404)
    with pytest.raises(SandboxControlError) as caught:
        sandbox.user(UNKNOWN_USER)
    assert caught.value.status == 404


def test_add_user(sandbox: SandboxServer) -> None:
    new = {
        "messenger_user_id": "7000000000000001",
        "first_name": "Hà",
        "last_name": "Trương Thu",
        "phone": "+84966000111",
        "last_interaction_minutes_ago": 1,
    }
    assert sandbox.add_user(new)["messenger_user_id"] == "7000000000000001"
    assert ok_data(call(sandbox, "GET", "/users", params={"phone": "0966000111"}))["first_name"] == "Hà"
    with pytest.raises(SandboxControlError) as caught:
        sandbox.add_user(new)
    assert caught.value.status == 409
    assert len(sandbox.users(BOT)) == 13
    sandbox.reset()
    assert len(sandbox.users(BOT)) == 12


def test_bots_listing_shows_no_token(sandbox: SandboxServer) -> None:
    bots = sandbox.control("GET", "/bots")
    assert [bot["id"] for bot in bots] == [BOT, OTHER_BOT]
    assert "shipping_update" in bots[0]["blocks"]
    assert sandbox.token not in json.dumps(bots)


def test_request_log_redacts_the_token(sandbox: SandboxServer) -> None:
    ok_data(call(sandbox, "POST", f"/users/{LAN}/tags", json={"tags": ["vip"]}))
    error(call(sandbox, "GET", "", token=sandbox.tokens[OTHER_BOT]), 403)
    log = sandbox.request_log()
    assert [(r["method"], r["path"], r["status"]) for r in log] == [
        ("POST", f"/api/bots/{BOT}/users/{LAN}/tags", 200),
        ("GET", f"/api/bots/{BOT}", 403),
    ]
    assert log[0]["query"] == {"ahachat_token": "***"}
    assert log[0]["body"] == {"tags": ["vip"]}
    text = json.dumps(log)
    assert sandbox.token not in text
    assert sandbox.tokens[OTHER_BOT] not in text
    assert sandbox.request_log(limit=1) == log[-1:]


def test_stats_count_api_requests_by_route_and_status(sandbox: SandboxServer) -> None:
    ok_data(call(sandbox, "GET", f"/users/{LAN}"))
    ok_data(call(sandbox, "GET", f"/users/{MINH}"))
    error(call(sandbox, "GET", f"/users/{UNKNOWN_USER}"), 404)
    error(_session.get(f"{sandbox.url}/api/nowhere", timeout=10), 404)
    sandbox.outbox()  # the control API is not counted
    stats = sandbox.stats()
    assert stats["total"] == 4
    assert stats["by_status"] == {"200": 2, "404": 2}
    assert stats["by_route"]["GET /api/bots/{bot_id}/users/{user_id}"] == {"200": 2, "404": 1}
    assert stats["by_route"]["GET (no route)"] == {"404": 1}


def test_unknown_endpoint_and_method(sandbox: SandboxServer) -> None:
    assert "no such endpoint" in error(_session.get(f"{sandbox.url}/api/v2/anything", timeout=10), 404)
    error(call(sandbox, "DELETE", f"/users/{LAN}"), 405)


# --------------------------------------------------------------------------- seed, processes, connection


def test_seed_shape() -> None:
    seed = read_seed()
    bot = seed["bots"][0]
    assert bot["id"] == BOT
    assert len(bot["token"]) == 64
    int(bot["token"], 16)
    required = {"shipping_update", "confirm_delivery", "welcome", "menu", "after_size", "size_m"}
    assert required <= set(bot["blocks"])
    users = bot["users"]
    assert len(users) >= 12
    assert all(isinstance(u["messenger_user_id"], str) and len(u["messenger_user_id"]) == 16 for u in users)
    minutes = [u["last_interaction_minutes_ago"] for u in users]
    assert any(m < 24 * 60 for m in minutes)
    assert any(m > 24 * 60 for m in minutes)
    assert [u["messenger_user_id"] for u in users if not u["subscribed"]] == [ANH_UNSUBSCRIBED]
    assert DEFAULT_SEED_PATH.name == "seed.json"


def test_bad_seeds_are_refused(tmp_path: Path) -> None:
    seed = read_seed()
    seed["bots"][0]["blocks"]["broken"] = {"messages": [{"text": "x"}], "redirect_to_blocks": ["missing"]}
    with pytest.raises(SeedError, match="missing"):
        SandboxState(seed)
    seed = read_seed()
    seed["bots"][0]["users"][0]["messenger_user_id"] = 3.8e15
    with pytest.raises(SeedError, match="messenger_user_id"):
        SandboxState(seed)
    path = tmp_path / "seed.json"
    path.write_text("{", encoding="utf-8")
    with pytest.raises(SeedError, match="cannot read"):
        read_seed(path)


def test_custom_seed_in_process() -> None:
    seed = {
        "bots": [
            {
                "id": "42",
                "name": "Nhỏ",
                "token": "t" * 10,
                "blocks": {"hi": {"messages": [{"text": "Chào {{first_name}}"}]}},
                "users": [
                    {
                        "messenger_user_id": "1000000000000001",
                        "first_name": "Bình",
                        "last_interaction_minutes_ago": 1,
                    }
                ],
            }
        ]
    }
    with SandboxServer(seed, config={"latency_ms": 1}) as server:
        assert server.bot_id == "42"
        assert server.config()["latency_ms"] == 1
        response = _session.post(
            f"{server.url}/api/bots/42/users/1000000000000001/send",
            params={
                "ahachat_token": "t" * 10,
                "ahachat_block_name": "hi",
            },
            timeout=10,
        )
        sent(response)
        assert server.outbox()[0]["text"] == "Chào Bình"
    with pytest.raises(RuntimeError, match="not running"):
        server.reset()


def test_connection_uri_is_airflow_format(sandbox: SandboxServer) -> None:
    uri = sandbox.connection_uri
    assert uri == f"ahachat://{BOT}:{sandbox.token}@127.0.0.1:{sandbox.port}/http"
    assert sandbox.connection_env == {"AIRFLOW_CONN_AHACHAT_DEFAULT": uri}
    from airflow.models.connection import Connection

    conn = Connection(conn_id="ahachat_default", uri=uri)
    assert (conn.conn_type, conn.login, conn.password) == ("ahachat", BOT, sandbox.token)
    assert (conn.host, conn.port, conn.schema) == ("127.0.0.1", sandbox.port, "http")


@pytest.mark.slow
def test_sandbox_process_prints_its_url_and_stops_cleanly() -> None:
    process = SandboxProcess(rate_limit=100)
    with process:
        assert process.url.startswith("http://127.0.0.1:")
        assert process.pid is not None
        assert process.output[0] == f"{READY_PREFIX}{process.url}"
        assert f"AIRFLOW_CONN_AHACHAT_DEFAULT='{process.connection_uri}'" in process.output
        assert process.config()["rate_limit"] == 100
        response = _session.get(
            f"{process.url}/api/bots/{BOT}/users/{LAN}", params={"ahachat_token": process.token}
        )
        assert ok_data(response)["first_name"] == "Lan"
    assert process.returncode == 0
    # The token appears once: in the connection line, which is the point of that line.
    assert sum(process.token in line for line in process.output) == 1


@pytest.mark.slow
def test_command_line_adds_numbered_customers() -> None:
    with SandboxProcess(extra_args=["--customers", "250"]) as process:
        assert any(line.startswith(f"Bot {BOT} ") and ": 262 users," in line for line in process.output)
        uid = "9000000000000249"
        response = _session.get(
            f"{process.url}/api/bots/{BOT}/users/{uid}", params={"ahachat_token": process.token}
        )
        assert ok_data(response)["phone"] == "+84900000249"


@pytest.mark.slow
def test_the_rules_before_april_2026_are_a_flag_or_an_environment_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow_provider_ahachat.sandbox.__main__ import build_parser
    from airflow_provider_ahachat.sandbox.messenger import RULES_ENV

    assert build_parser().parse_args([]).messenger_rules == "2026"
    assert build_parser().parse_args(["--messenger-rules", "2025"]).messenger_rules == "2025"
    monkeypatch.setenv(RULES_ENV, "2025")
    assert build_parser().parse_args([]).messenger_rules == "2025"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--messenger-rules", "2024"])
    # A child started with the variable enforces the old rules: a retired tag reaches Bảo, 3 days on.
    with SandboxProcess(env={**os.environ, RULES_ENV: "2025"}) as process:
        assert process.config()["messenger_rules"] == "2025"
        assert any("before 27 April 2026" in line for line in process.output)
        params = {"ahachat_token": process.token, "ahachat_message_tag": "POST_PURCHASE_UPDATE"}
        answer = _session.post(
            f"{process.url}/api/bots/{BOT}/users/{BAO}/send",
            params={**params, "ahachat_block_name": "welcome"},
        )
        assert "with the tag POST_PURCHASE_UPDATE" in sent(answer)
    with SandboxProcess(messenger_rules="2026", env={**os.environ, RULES_ENV: "2025"}) as process:
        assert process.config()["messenger_rules"] == "2026"  # the flag wins


def test_the_seed_shows_both_sides_of_the_window(sandbox: SandboxServer) -> None:
    """The demo's customers: some wrote within 24 hours, some within 7 days, some longer ago."""
    now = datetime.now(timezone.utc)
    ages = {
        user["messenger_user_id"]: now
        - datetime.fromisoformat(user["last_interaction_at"].replace("Z", "+00:00"))
        for user in sandbox.users()
        if user["subscribed"] and user["last_interaction_at"]
    }
    day = timedelta(days=1)
    assert {LAN, MINH, TRANG} <= {uid for uid, age in ages.items() if age < day}
    assert BAO in {uid for uid, age in ages.items() if day < age < 7 * day}
    assert any(age > 7 * day for age in ages.values())
    assert not sandbox.user(ANH_UNSUBSCRIBED)["subscribed"]


def test_config_switches_the_rules_and_reset_restores_them(sandbox: SandboxServer) -> None:
    meta_error(broadcast(sandbox, LAN, "welcome", tag="ACCOUNT_UPDATE"), 400, 100)
    assert sandbox.configure(messenger_rules="2025")["messenger_rules"] == "2025"
    assert "with the tag ACCOUNT_UPDATE" in sent(broadcast(sandbox, BAO, "welcome", tag="ACCOUNT_UPDATE"))
    meta_error(broadcast(sandbox, BAO, "welcome"), 422, 10)  # no tag: the 24-hour rule still holds
    sandbox.reset()
    assert sandbox.config()["messenger_rules"] == "2026"
    meta_error(broadcast(sandbox, BAO, "welcome", tag="ACCOUNT_UPDATE"), 400, 100)


def test_command_line_refuses_a_bad_seed(tmp_path: Path) -> None:
    path = tmp_path / "seed.json"
    path.write_text(json.dumps({"bots": []}), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "airflow_provider_ahachat.sandbox", "--port", "0", "--seed", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "bots" in result.stderr
    assert result.stdout == ""


def test_an_unexpected_error_is_a_json_500(sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(sandbox.state, "bot", broken)
    assert "internal error" in error(call(sandbox, "GET", ""), 500)
    assert sandbox.stats()["by_status"] == {"500": 1}


def test_reset_refills_the_rate_limit() -> None:
    with SandboxServer(config={"rate_limit": 1, "retry_after": 5}) as server:
        url = f"{server.url}/api/bots/{BOT}"
        first = _session.get(url, params={"ahachat_token": server.token}, timeout=10)
        second = _session.get(url, params={"ahachat_token": server.token}, timeout=10)
        assert (first.status_code, second.status_code) == (200, 429)
        assert second.headers["Retry-After"] == "5"
        server.reset()
        assert _session.get(url, params={"ahachat_token": server.token}, timeout=10).status_code == 200
    with pytest.raises(ValueError, match="rate_limit"):
        SandboxServer(config={"rate_limit": -1})


# --------------------------------------------------------------------------- tests at scale


def test_generated_users_are_real_users_and_outbox_counts_tell_who_got_what(sandbox: SandboxServer) -> None:
    ids = sandbox.generate_users(3, start=10)
    assert ids == ["9000000000000010", "9000000000000011", "9000000000000012"]
    found = ok_data(call(sandbox, "GET", "/users", params={"phone": "0900000011"}))
    assert found["messenger_user_id"] == ids[1]
    assert ok_data(call(sandbox, "GET", f"/users/{ids[2]}"))["first_name"] == "Khách 12"
    for uid in (ids[0], ids[0], ids[2]):
        assert broadcast(sandbox, uid, "shipping_update").status_code == 200
    assert sandbox.outbox_counts() == {ids[0]: 2, ids[2]: 1}
    assert sandbox.outbox_counts(bot_id="20517736") == {}
    with pytest.raises(SandboxControlError) as caught:
        sandbox.generate_users(1, start=10)  # the IDs are taken: nothing is added twice silently
    assert caught.value.status == 409


def test_out_of_window_generated_users_get_no_text(sandbox: SandboxServer) -> None:
    (uid,) = sandbox.generate_users(1, in_window=False)
    message = {"messages": [{"text": "hi"}]}
    assert error(call(sandbox, "POST", f"/users/{uid}/messages", json=message), 422)


def test_random_errors_draw_from_a_list_of_statuses(sandbox: SandboxServer) -> None:
    sandbox.configure(error_rate=1.0, error_status=[429, 503], retry_after=0)
    statuses = {call(sandbox, "GET", "").status_code for _ in range(40)}
    assert statuses == {429, 503}
    assert call(sandbox, "GET", "").headers.get("Retry-After") in (None, "0")
