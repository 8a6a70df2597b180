"""
Message tags, reserved attribute names, attribute value types and Chatfuel-shaped answers, as they
go on the wire (a recording server) and as the sandbox stores them.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pendulum
import pytest
from recording_server import RecordingServer, Reply

from airflow_provider_ahachat.bulk import BulkRunner
from airflow_provider_ahachat.client import AhaChatClient, RetryPolicy
from airflow_provider_ahachat.conditions import UserConditions
from airflow_provider_ahachat.exceptions import (
    AhaChatAPIError,
    AhaChatInvalidRequestError,
    AhaChatValidationError,
)
from airflow_provider_ahachat.models import (
    ALLOWED_MESSAGE_TAGS,
    RETIRED_MESSAGE_TAGS,
    DynamicMessage,
    MessageTag,
    User,
    attribute_query_value,
    attribute_value,
    php_query_key,
    validate_attribute_names,
    validate_attributes,
)
from airflow_provider_ahachat.sandbox import SandboxServer

TOKEN = "0f3c9a7e5b1d4f2a8c6e0b9d7f5a3c1e2b4d6f8a0c2e4b6d8f0a2c4e6b8d0f2a"
BOT = "12404829"
USER = "3824547807572463"
LAN = "3824547807572463"  # in the sandbox's seed
NO_RETRY = RetryPolicy(max_retries=0)


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    srv = RecordingServer().start()
    yield srv
    srv.stop()


@pytest.fixture
def client(server: RecordingServer) -> Iterator[AhaChatClient]:
    with AhaChatClient(BOT, TOKEN, server.url, retry=NO_RETRY, read_timeout=2, connect_timeout=2) as c:
        yield c


@pytest.fixture
def sandbox_client(sandbox: SandboxServer) -> Iterator[AhaChatClient]:
    with AhaChatClient(sandbox.bot_id, sandbox.token, sandbox.url, retry=NO_RETRY) as c:
        yield c


def query_of(server: RecordingServer) -> dict[str, str]:
    (request,) = server.requests
    return dict(request.query)


# --------------------------------------------------------------------------- 1. message tags

#: The tags AhaChat's Broadcast API page lists, and which of them Meta still allows any page.
LISTED_TAGS = (
    "CONFIRMED_EVENT_UPDATE",
    "POST_PURCHASE_UPDATE",
    "ACCOUNT_UPDATE",
    "HUMAN_AGENT",
    "NON_PROMOTIONAL_SUBSCRIPTION",
)
REFUSED_TAGS = (
    "CONFIRMED_EVENT_UPDATE",
    "POST_PURCHASE_UPDATE",
    "ACCOUNT_UPDATE",
    "NON_PROMOTIONAL_SUBSCRIPTION",
)
SPELLINGS = [str.upper, str.lower, str.title, lambda t: f"  {t.lower()} "]


def test_the_tags_are_those_ahachat_lists_and_meta_allows_one() -> None:
    assert tuple(tag.value for tag in MessageTag) == LISTED_TAGS
    assert set(RETIRED_MESSAGE_TAGS) == set(REFUSED_TAGS)
    assert {"HUMAN_AGENT"} == ALLOWED_MESSAGE_TAGS
    assert MessageTag.parse(" post_purchase_update ") is MessageTag.POST_PURCHASE_UPDATE  # known, not allowed


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_human_agent_in_any_case_goes_out_upper_case(
    client: AhaChatClient, server: RecordingServer, spelling: Any
) -> None:
    client.run(
        "broadcast_block",
        {"block_name": "Chăm sóc khách hàng", "message_tag": spelling("HUMAN_AGENT")},
        user_id=USER,
    )
    assert query_of(server)["ahachat_message_tag"] == "HUMAN_AGENT"


@pytest.mark.parametrize("tag", [None, "", "  "])
def test_no_tag_sends_no_tag_parameter(client: AhaChatClient, server: RecordingServer, tag: Any) -> None:
    client.run("broadcast_block", {"block_name": "Chăm sóc khách hàng", "message_tag": tag}, user_id=USER)
    assert "ahachat_message_tag" not in query_of(server)


UNKNOWN = "is not a message tag Messenger accepts; use HUMAN_AGENT"  # a name, but no tag of Meta's
NOT_A_NAME = "is not a message tag (a name such as HUMAN_AGENT"


@pytest.mark.parametrize(
    ("tag", "rule"),
    [
        *((tag, UNKNOWN) for tag in ("STANDARD_MESSAGING", "PROMOTION", "HUMAN_AGENTS")),
        *((tag, NOT_A_NAME) for tag in ("human agent", "ACCOUNT-UPDATE", 3, ["HUMAN_AGENT"])),
    ],
)
def test_any_other_tag_is_refused_saying_why(
    client: AhaChatClient, server: RecordingServer, tag: Any, rule: str
) -> None:
    with pytest.raises(AhaChatValidationError) as info:
        client.run("broadcast_block", {"block_name": "b", "message_tag": tag}, user_id=USER)
    assert f"message_tag: {tag!r} {rule}" in str(info.value)
    if rule == UNKNOWN:
        assert "connection's extra message_tags" in str(info.value)
    assert server.requests == []


def test_the_sandbox_takes_human_agent(sandbox_client: AhaChatClient, sandbox: SandboxServer) -> None:
    sandbox_client.run(
        "broadcast_block", {"block_name": "welcome", "message_tag": "human_agent"}, user_id=LAN
    )
    (sent,) = sandbox.outbox(LAN)
    assert sent["message_tag"] == "HUMAN_AGENT"


# --------------------------------------------------------------------------- 3. reserved names

#: Names AhaChat reads as its own ahachat_* parameters: any case, and as PHP's query parser reads them.
AHACHAT_NAMES = [
    "ahachat_token",
    "ahachat_message_tag",
    "ahachat_block_name",
    "AHACHAT_TOKEN",
    "AhaChat_Block_Name",
    "ahachat_ghi_chú",
    "ahachat_token[]",
    "ahachat_token[0]",
    "ahachat.token",
    "ahachat token",
    "ahachat[token",
    "Ahachat.Message_Tag[x][y]",
    "ahachat_token\x00ignored",
]
#: Names PHP reads as ``phone`` (in any case).
PHONE_NAMES = ["phone", "PHONE", "Phone", "phone[]", "phone[0]"]
#: Ordinary names that only look alike.
ORDINARY_NAMES = [
    "ahachat",
    "ahachatx",
    "aha_chat_token",
    "ahachat[x]",
    "my_ahachat_token",
    "phone_2",
    "phone.x",
    "số_điện_thoại",
]


@pytest.mark.parametrize(
    ("name", "read_as"),
    [
        ("ahachat_token[]", "ahachat_token"),
        ("ahachat_token[a][b]", "ahachat_token"),
        ("ahachat.token", "ahachat_token"),
        ("ahachat token", "ahachat_token"),
        ("  ahachat token", "ahachat_token"),
        ("ahachat[token", "ahachat_token"),
        ("a[b.c", "a_b.c"),  # after an unclosed bracket PHP keeps the rest as it is
        ("ahachat[x]", "ahachat"),
        ("phone[]", "phone"),
        ("tên khách", "tên_khách"),
        ("a\x00b", "a"),
    ],
)
def test_php_reads_query_names_so(name: str, read_as: str) -> None:
    assert php_query_key(name) == read_as


@pytest.mark.parametrize("name", AHACHAT_NAMES)
def test_ahachat_names_are_refused_everywhere_before_sending(
    client: AhaChatClient, server: RecordingServer, name: str
) -> None:
    calls = [
        lambda: client.run(
            "broadcast_block", {"block_name": "b", "attributes": {name: "Nguyễn Thị Lan"}}, user_id=USER
        ),
        lambda: client.run(
            "broadcast_block", {"block_name": "b", "attributes": {name: "x"}}, phone="0908071111"
        ),
        lambda: client.run("add_attributes", {"attributes": {name: "x"}}, user_id=USER),
        lambda: client.run("reset_attributes", {"attributes": [name]}, user_id=USER),
        lambda: client.run(
            "send_message",
            {"message": {"messages": [{"text": "Chào"}], "set_attributes": {name: "x"}}},
            user_id=USER,
        ),
    ]
    for call in calls:
        with pytest.raises(AhaChatValidationError) as info:
            call()
        message = str(info.value)
        assert f"attribute name {name!r} is reserved by the Broadcast API" in message
        assert "'ahachat_', in any case, is AhaChat's own" in message
        if php_query_key(name) != name:
            assert f"a PHP query parser reads {name!r} as {php_query_key(name)!r}" in message
    assert server.requests == []


@pytest.mark.parametrize("name", PHONE_NAMES)
def test_phone_is_reserved_only_in_the_by_phone_broadcast(
    client: AhaChatClient, server: RecordingServer, name: str
) -> None:
    with pytest.raises(
        AhaChatValidationError, match=rf"attribute name '{__import__('re').escape(name)}' is reserved"
    ):
        client.run(
            "broadcast_block", {"block_name": "b", "attributes": {name: "0912000111"}}, phone="0908071111"
        )
    assert server.requests == []

    client.run("broadcast_block", {"block_name": "b", "attributes": {name: "0912 000 111"}}, user_id=USER)
    client.run("add_attributes", {"attributes": {name: "0912 000 111"}}, user_id=USER)
    client.run("reset_attributes", {"attributes": [name]}, user_id=USER)
    client.run(
        "send_message",
        {"message": {"messages": [{"text": "Chào"}], "set_attributes": {name: "0912"}}},
        user_id=USER,
    )
    by_user, added, reset, sent = server.requests
    assert by_user.path == f"/api/bots/{BOT}/users/{USER}/send"
    assert by_user.query[-1] == (name, "0912 000 111")
    assert added.json == {"attributes": {name: "0912 000 111"}}
    assert reset.json == {"attributes": [name]}
    assert sent.json["set_attributes"] == {name: "0912"}


@pytest.mark.parametrize("name", ORDINARY_NAMES)
def test_names_that_only_look_reserved_go_through(
    client: AhaChatClient, server: RecordingServer, name: str
) -> None:
    client.run("broadcast_block", {"block_name": "b", "attributes": {name: "Hà Nội"}}, phone="0908071111")
    assert query_of(server)[name] == "Hà Nội"


@pytest.mark.parametrize("name", [" ten", "ten ", "\tten", "ten\n", " ", ""])
def test_names_with_leading_or_trailing_spaces_are_refused(
    client: AhaChatClient, server: RecordingServer, name: str
) -> None:
    for call in (
        lambda: client.run("broadcast_block", {"block_name": "b", "attributes": {name: "Lan"}}, user_id=USER),
        lambda: client.run("add_attributes", {"attributes": {name: "Lan"}}, user_id=USER),
        lambda: client.run("reset_attributes", {"attributes": [name]}, user_id=USER),
    ):
        with pytest.raises(AhaChatValidationError) as info:
            call()
        message = str(info.value)
        assert "has leading or trailing spaces" in message or "must be non-empty strings" in message
    assert server.requests == []


def test_every_bad_name_is_reported_at_once() -> None:
    with pytest.raises(AhaChatValidationError) as info:
        validate_attributes({"ahachat_x": 1, "ok": 2, " ten": 3, "phone": 4}, by_phone=True)
    problems = info.value.problems
    assert [p.split(":")[0] for p in problems] == [
        "attributes.ahachat_x",
        "attributes. ten",
        "attributes.phone",
    ]
    with pytest.raises(AhaChatValidationError) as info:
        validate_attribute_names(["ok", "AHACHAT_TOKEN", "ten "])
    assert [p.split(":")[0] for p in info.value.problems] == ["attributes[1]", "attributes[2]"]


def test_the_sandbox_keeps_phone_as_an_attribute_of_a_by_user_broadcast(
    sandbox_client: AhaChatClient, sandbox: SandboxServer
) -> None:
    sandbox_client.run(
        "broadcast_block", {"block_name": "welcome", "attributes": {"phone": "0912 000 111"}}, user_id=LAN
    )
    sandbox_client.run("add_attributes", {"attributes": {"Phone": "0913"}}, user_id=LAN)
    assert sandbox.user(LAN)["attributes"]["phone"] == "0912 000 111"
    assert sandbox.user(LAN)["attributes"]["Phone"] == "0913"


# --------------------------------------------------------------------------- 4. attribute values

VN = timezone(timedelta(hours=7))
#: Python value, what the query string carries, what a JSON body carries.
VALUES: list[tuple[Any, str, Any]] = [
    ("Nguyễn Thị Lan", "Nguyễn Thị Lan", "Nguyễn Thị Lan"),
    (True, "yes", "yes"),
    (False, "no", "no"),
    (99999, "99999", 99999),
    (3824547807572463, "3824547807572463", 3824547807572463),
    (1.0, "1", 1),
    (-2.0, "-2", -2),
    (0.1, "0.1", 0.1),
    (199000.5, "199000.5", 199000.5),
    (1e-7, "0.0000001", 1e-7),
    (1e22, "10000000000000000000000", 10**22),
    (Decimal("19.90"), "19.9", 19.9),
    (Decimal("199000"), "199000", 199000),
    (Decimal("1E+3"), "1000", 1000),
    (Decimal("0.1000000000000000000001"), "0.1000000000000000000001", "0.1000000000000000000001"),
    (date(2023, 12, 30), "30/12/2023", "30/12/2023"),
    (date(2026, 1, 2), "02/01/2026", "02/01/2026"),
    (datetime(2026, 11, 30, 8, 5, 9, 999999), "30/11/2026 08:05:09", "30/11/2026 08:05:09"),
    (datetime(2026, 11, 30, 23, 0, tzinfo=VN), "30/11/2026 23:00:00", "30/11/2026 23:00:00"),
    (
        pendulum.datetime(2026, 11, 30, 13, 15, tz="Asia/Ho_Chi_Minh"),
        "30/11/2026 13:15:00",
        "30/11/2026 13:15:00",
    ),
    (pendulum.date(2026, 12, 1), "01/12/2026", "01/12/2026"),
    (["Áo thun", "Quần jean"], '["Áo thun","Quần jean"]', '["Áo thun","Quần jean"]'),
    (("M", "L"), '["M","L"]', '["M","L"]'),
    (
        {"ma_don": "DH10231", "ngay": date(2026, 11, 30), "tong": Decimal("199000.50"), "ghi_chu": None},
        '{"ma_don":"DH10231","ngay":"30/11/2026","tong":199000.5,"ghi_chu":null}',
        '{"ma_don":"DH10231","ngay":"30/11/2026","tong":199000.5,"ghi_chu":null}',
    ),
]


@pytest.mark.parametrize(("value", "text", "body"), VALUES)
def test_values_go_on_the_wire_as_ahachat_types_them(
    client: AhaChatClient, server: RecordingServer, value: Any, text: str, body: Any
) -> None:
    client.run("broadcast_block", {"block_name": "Giao hàng", "attributes": {"giá_trị": value}}, user_id=USER)
    client.run(
        "broadcast_block", {"block_name": "Giao hàng", "attributes": {"giá_trị": value}}, phone="0908071111"
    )
    client.run("add_attributes", {"attributes": {"giá_trị": value}}, user_id=USER)
    client.run(
        "send_message",
        {"message": {"messages": [{"text": "Chào"}], "set_attributes": {"giá_trị": value}}},
        user_id=USER,
    )
    by_user, by_phone, added, sent = server.requests
    assert by_user.query[-1] == ("giá_trị", text)
    assert by_phone.query[-1] == ("giá_trị", text)
    assert added.json == {"attributes": {"giá_trị": body}}
    assert type(added.json["attributes"]["giá_trị"]) is type(body)
    assert sent.json["set_attributes"] == {"giá_trị": body}
    # Converting is stable: a converted value converts to itself (bulk validates twice).
    assert attribute_value(attribute_value(value)) == attribute_value(value)
    assert attribute_query_value(value) == text


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        (None, "got null"),
        (float("nan"), "must be a finite number"),
        (float("inf"), "must be a finite number"),
        (Decimal("NaN"), "must be a finite number"),
        (Decimal("sNaN"), "must be a finite number"),
        (Decimal("-Infinity"), "must be a finite number"),
        ({1, 2}, "got set"),
        (b"bytes", "got bytes"),
        (datetime(2026, 1, 1).time(), "got time"),
        ([float("nan")], "cannot be written as JSON"),
        ({"a": object()}, "cannot be written as JSON"),
    ],
)
def test_other_values_are_refused_before_sending(
    client: AhaChatClient, server: RecordingServer, value: Any, rule: str
) -> None:
    for call in (
        lambda: client.run(
            "broadcast_block", {"block_name": "b", "attributes": {"ngày_giao": value}}, user_id=USER
        ),
        lambda: client.run("add_attributes", {"attributes": {"ngày_giao": value}}, user_id=USER),
    ):
        with pytest.raises(AhaChatValidationError) as info:
            call()
        assert str(info.value).startswith("attributes.ngày_giao: ")
        assert rule in str(info.value)
    assert server.requests == []


def test_a_json_string_of_attributes_is_typed_the_same() -> None:
    given = '{"so_luong": 2.0, "da_nhan": true, "size": ["M", "L"], "dia_chi": {"tinh": "Đà Nẵng"}}'
    assert validate_attributes(given) == {
        "so_luong": 2,
        "da_nhan": "yes",
        "size": '["M","L"]',
        "dia_chi": '{"tinh":"Đà Nẵng"}',
    }


def test_the_sandbox_stores_values_as_ahachat_types_them(
    sandbox_client: AhaChatClient, sandbox: SandboxServer
) -> None:
    values = {
        "ngay_giao": date(2026, 12, 30),
        "hen_goi": pendulum.datetime(2026, 12, 30, 9, 30, tz="Asia/Ho_Chi_Minh"),
        "da_thanh_toan": True,
        "tong_tien": Decimal("199000.50"),
        "so_luong": 2.0,
        "san_pham": ["Áo thun", "Quần jean"],
    }
    sandbox_client.run("broadcast_block", {"block_name": "welcome", "attributes": values}, user_id=LAN)
    by_query = sandbox.user(LAN)["attributes"]
    sandbox_client.run(
        "add_attributes", {"attributes": {f"{name}_2": value for name, value in values.items()}}, user_id=LAN
    )
    by_body = sandbox.user(LAN)["attributes"]
    expected = {
        "ngay_giao": "30/12/2026",
        "hen_goi": "30/12/2026 09:30:00",
        "da_thanh_toan": "yes",
        "tong_tien": "199000.5",
        "so_luong": "2",
        "san_pham": '["Áo thun","Quần jean"]',
    }
    for name, text in expected.items():
        assert by_query[name] == text
        assert attribute_query_value(by_body[f"{name}_2"]) == text
    # find_user reads them back, and a sensor's condition matches them as written in Python.
    user = sandbox_client.send(sandbox_client.prepare("find_user", user_id=LAN))
    assert user.attributes["ngay_giao"] == "30/12/2026"
    conditions = UserConditions.parse(
        attributes={"da_thanh_toan": True, "so_luong": 2, "tong_tien": 199000.5}
    )
    assert conditions.unmet(user) == []
    assert conditions.unmet(
        user.model_copy(update={"attributes": {**user.attributes, "da_thanh_toan": "no"}})
    )


def test_a_condition_on_a_boolean_reads_yes_no_and_true_false() -> None:
    def user(value: Any) -> User:
        return User(messenger_user_id=USER, attributes={"da_nhan": value})

    yes, no = (
        UserConditions.parse(attributes={"da_nhan": True}),
        UserConditions.parse(attributes={"da_nhan": False}),
    )
    for value in ("yes", "Yes", "true", True):
        assert yes.unmet(user(value)) == [] and no.unmet(user(value)) != []
    for value in ("no", "false", False):
        assert no.unmet(user(value)) == [] and yes.unmet(user(value)) != []
    assert yes.unmet(user("có")) != []


# --------------------------------------------------------------------------- 2. answers like Chatfuel's


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (
            {"success": False, "result": "Không tìm thấy block 'Giao hàng'"},
            "Không tìm thấy block 'Giao hàng'",
        ),
        ({"success": False, "message": "Sai token"}, "Sai token"),
        ({"success": False, "error": "Người dùng đã hủy đăng ký"}, "Người dùng đã hủy đăng ký"),
        ({"success": False, "error": {"message": "Trang bị hạn chế", "code": 10}}, "Trang bị hạn chế"),
        ({"success": False, "message": "Lỗi", "result": "chi tiết"}, "Lỗi"),
        ({"success": False}, "success is false"),
        ({"success": False, "result": ""}, "success is false"),
    ],
)
def test_a_2xx_with_success_false_is_a_failure_with_its_reason(
    client: AhaChatClient, server: RecordingServer, body: dict[str, Any], reason: str
) -> None:
    server.default = Reply(status=200, body=body)
    with pytest.raises(AhaChatAPIError) as info:
        client.run("broadcast_block", {"block_name": "Giao hàng"}, user_id=USER)
    assert str(info.value) == f"AhaChat refused POST /api/bots/{BOT}/users/{USER}/send: {reason}"
    assert info.value.api_message == (None if reason == "success is false" else reason)
    assert info.value.status == 200
    assert len(server.requests) == 1  # a refusal is not retried


@pytest.mark.parametrize("key", ["message", "result", "error"])
def test_an_error_status_reads_its_reason_from_any_field(
    client: AhaChatClient, server: RecordingServer, key: str
) -> None:
    server.default = Reply(
        status=400, body={"success": False, key: f"Thẻ không hợp lệ ahachat_token={TOKEN}"}
    )
    with pytest.raises(AhaChatInvalidRequestError) as info:
        client.run("broadcast_block", {"block_name": "b"}, user_id=USER)
    assert info.value.api_message == "Thẻ không hợp lệ ahachat_token=***"
    assert str(info.value).endswith(": Thẻ không hợp lệ ahachat_token=***")
    assert TOKEN not in repr(info.value)


def test_a_success_in_chatfuels_shape_gives_its_result(
    client: AhaChatClient, server: RecordingServer
) -> None:
    server.default = Reply(body={"success": True, "result": f"Đã gửi tới Lan {TOKEN}"})
    result = client.run("broadcast_block", {"block_name": "b"}, user_id=USER)
    assert result.data == "Đã gửi tới Lan ***"
    server.default = Reply(body={"success": True, "data": {"queued": 1}, "result": "ok"})
    assert client.run("broadcast_block", {"block_name": "b"}, user_id=USER).data == {"queued": 1}
    server.default = Reply(body={"success": True})
    assert client.run("broadcast_block", {"block_name": "b"}, user_id=USER).data is None


def test_the_bulk_report_carries_the_reason_from_result(
    client: AhaChatClient, server: RecordingServer, tmp_path: Any
) -> None:
    server.default = Reply(status=200, body={"success": False, "result": "Khách hàng chưa đăng ký nhận tin"})
    runner = BulkRunner(client, client.bind("broadcast_block", block_name="Giao hàng"), max_failure_ratio=1)
    summary = runner.run([USER])
    assert summary["outcomes"] == {"failed": 1}
    (failure,) = summary["first_failures"]
    assert failure["reason"].endswith(": Khách hàng chưa đăng ký nhận tin"), failure


def test_dynamic_message_set_attributes_typed_too() -> None:
    message = DynamicMessage.parse(
        {"messages": [{"text": "Chào"}], "set_attributes": {"hen": date(2026, 12, 1)}}
    )
    assert message.to_payload()["set_attributes"] == {"hen": "01/12/2026"}


def test_the_sandbox_answers_broadcasts_in_chatfuels_shape(
    sandbox_client: AhaChatClient, sandbox: SandboxServer
) -> None:
    result = sandbox_client.run(
        "broadcast_block",
        {"block_name": "shipping_update", "attributes": {"order_id": "Đơn #9", "tracking_number": "GHN1"}},
        phone="0908 071 111",
    )
    assert result.data == f"Block 'shipping_update' sent to user {LAN} without a tag: 1 message(s), outbox #1"
    with pytest.raises(AhaChatAPIError) as info:
        sandbox_client.run("broadcast_block", {"block_name": "Khối không có"}, user_id=LAN)
    assert info.value.status == 404
    assert info.value.api_message is not None and "Khối không có" in info.value.api_message
    assert str(info.value).endswith(info.value.api_message)
    # The other actions keep {"success": true, "data": ...}.
    assert (
        sandbox_client.run("add_tags", {"tags": "khách_quen"}, user_id=LAN).data["tags"][-1] == "khách_quen"
    )
