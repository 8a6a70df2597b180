"""Input rules: each names the field and the rule it broke."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from airflow_provider_ahachat.exceptions import AhaChatValidationError
from airflow_provider_ahachat.models import (
    DynamicMessage,
    MessageTag,
    Recipient,
    User,
    normalize_phone,
    validate_attributes,
    validate_message_tag,
    validate_tags,
    validate_user_id,
)

#: The example of the contract, verbatim.
CONTRACT_EXAMPLE: dict[str, Any] = {
    "messages": [
        {"text": "Chào Lan!"},
        {"attachment": {"type": "image", "payload": {"url": "https://example.com/a.png"}}},
        {
            "attachment": {
                "type": "template",
                "payload": {
                    "template_type": "button",
                    "text": "Bạn muốn làm gì?",
                    "buttons": [
                        {"type": "show_block", "block_name": "menu", "title": "Xem menu"},
                        {"type": "web_url", "url": "https://example.com", "title": "Website"},
                        {"type": "phone_number", "phone_number": "+84908071111", "title": "Gọi ngay"},
                    ],
                },
            }
        },
        {
            "attachment": {
                "type": "template",
                "payload": {
                    "template_type": "generic",
                    "image_aspect_ratio": "square",
                    "elements": [
                        {
                            "title": "Áo thun",
                            "subtitle": "199.000đ",
                            "image_url": "https://example.com/t.png",
                            "buttons": [{"type": "web_url", "url": "https://example.com/t", "title": "Mua"}],
                        }
                    ],
                },
            }
        },
        {"text": "Chọn size:", "quick_replies": [{"title": "M", "block_name": "size_m"}]},
    ],
    "set_attributes": {"size_asked": "yes"},
    "redirect_to_blocks": ["after_size"],
}

RECEIPT: dict[str, Any] = {
    "attachment": {
        "type": "template",
        "payload": {
            "template_type": "receipt",
            "recipient_name": "Nguyễn Thị Lan",
            "order_number": "DH123",
            "currency": "VND",
            "payment_method": "COD",
            "elements": [{"title": "Áo thun", "price": 199000, "quantity": 1}],
            "summary": {"total_cost": 199000},
        },
    }
}


def test_the_contract_example_is_valid_in_every_form() -> None:
    as_object = DynamicMessage.parse(CONTRACT_EXAMPLE)
    assert as_object.to_payload() == CONTRACT_EXAMPLE
    assert DynamicMessage.parse(json.dumps(CONTRACT_EXAMPLE)) == as_object
    as_list = DynamicMessage.parse(CONTRACT_EXAMPLE["messages"])
    assert as_list.to_payload() == {"messages": CONTRACT_EXAMPLE["messages"]}
    assert DynamicMessage.parse({"text": "Chào"}).to_payload() == {"messages": [{"text": "Chào"}]}
    assert DynamicMessage.parse([RECEIPT]).messages == [RECEIPT]


def with_change(path: list[Any], value: Any) -> dict[str, Any]:
    message = copy.deepcopy(CONTRACT_EXAMPLE)
    target: Any = message
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return message


BUTTON = {"type": "web_url", "url": "https://example.com", "title": "Mua"}
ELEMENT = {"title": "Áo", "buttons": [BUTTON]}
BUTTONS = ["messages", 2, "attachment", "payload", "buttons"]
GALLERY = ["messages", 3, "attachment", "payload"]


@pytest.mark.parametrize(
    ("path", "value", "problem"),
    [
        (BUTTONS, [BUTTON] * 4, "messages[2].attachment.payload.buttons: at most 3, got 4"),
        (BUTTONS, [], "messages[2].attachment.payload.buttons: at least 1"),
        (
            [*GALLERY, "elements"],
            [ELEMENT] * 11,
            "messages[3].attachment.payload.elements: at most 10, got 11",
        ),
        (
            [*GALLERY, "elements", 0, "buttons"],
            [BUTTON] * 4,
            "messages[3].attachment.payload.elements[0].buttons: at most 3, got 4",
        ),
        (
            [*GALLERY, "elements", 0, "title"],
            "x" * 81,
            "messages[3].attachment.payload.elements[0].title: at most 80 characters, got 81",
        ),
        (
            [*GALLERY, "elements", 0, "subtitle"],
            "x" * 81,
            "messages[3].attachment.payload.elements[0].subtitle: at most 80 characters",
        ),
        ([*GALLERY, "image_aspect_ratio"], "tall", "image_aspect_ratio: must be horizontal or square"),
        (
            ["messages", 4, "quick_replies"],
            [{"title": "M", "block_name": "m"}] * 14,
            "messages[4].quick_replies: at most 13, got 14",
        ),
        (["messages", 4, "quick_replies", 0, "block_name"], "", "messages[4].quick_replies[0].block_name"),
        (["messages", 0, "text"], "x" * 2001, "messages[0].text: at most 2000 characters, got 2001"),
        (["messages", 0, "text"], "", "messages[0].text: must be a non-empty string"),
        (
            ["messages", 2, "attachment", "payload", "text"],
            "x" * 641,
            "messages[2].attachment.payload.text: at most 640 characters, got 641",
        ),
        (
            [*BUTTONS, 0, "title"],
            "x" * 21,
            "messages[2].attachment.payload.buttons[0].title: at most 20 characters, got 21",
        ),
        ([*BUTTONS, 0, "type"], "postback", "buttons[0].type: must be one of web_url, show_block"),
        ([*BUTTONS, 1, "url"], "example.com", "buttons[1].url: must be an http or https URL"),
        ([*BUTTONS, 2, "phone_number"], "0908071111", "buttons[2].phone_number: must be + and 9 to 15"),
        (
            ["messages", 1, "attachment", "payload", "url"],
            "http://example.com/a.png",
            "messages[1].attachment.payload.url: must be an https URL",
        ),
        (
            ["messages", 1, "attachment", "payload", "url"],
            "https://example.com/a.mp3",
            "messages[1].attachment.payload.url: an image must be gif, jpeg, jpg, png, got .mp3",
        ),
        (["messages", 1, "attachment", "type"], "sticker", "messages[1].attachment.type: must be one of"),
        (["messages", 1, "attachment", "colour"], "red", "messages[1].attachment.colour: unknown field"),
        (["messages", 0, "attachment"], RECEIPT["attachment"], "messages[0]: must have exactly one of text"),
        (["messages", 0], "hello", "messages[0]: must be an object, got str"),
        (["messages"], [], "messages: at least 1"),
        (
            ["set_attributes"],
            {"ahachat_token[]": "1"},
            "set_attributes.ahachat_token[]: attribute name 'ahachat_token[]' is reserved",
        ),
        (
            ["set_attributes"],
            {"a": None},
            "set_attributes.a: values must be text, numbers, booleans, dates, datetimes, lists or objects",
        ),
        (["redirect_to_blocks"], [""], "redirect_to_blocks[0]: a block name must be a non-empty string"),
        (["extra"], 1, "message.extra: unknown field"),
    ],
)
def test_a_broken_message_names_the_field(path: list[Any], value: Any, problem: str) -> None:
    with pytest.raises(AhaChatValidationError) as info:
        DynamicMessage.parse(with_change(path, value))
    assert any(problem in p for p in info.value.problems), info.value.problems
    assert problem in str(info.value)


def test_every_problem_is_reported_at_once() -> None:
    broken = with_change(BUTTONS, [BUTTON] * 4)
    broken["messages"][0]["text"] = ""
    with pytest.raises(AhaChatValidationError) as info:
        DynamicMessage.parse(broken)
    assert len(info.value.problems) == 2
    assert str(info.value).startswith("2 problems:\n- ")


def test_receipt_rules() -> None:
    receipt = copy.deepcopy(RECEIPT)
    payload = receipt["attachment"]["payload"]
    payload["currency"] = "đồng"
    del payload["summary"]
    payload["elements"][0]["price"] = "199k"
    with pytest.raises(AhaChatValidationError) as info:
        DynamicMessage.parse([receipt])
    text = str(info.value)
    assert "messages[0].attachment.payload.currency: must be a 3-letter ISO 4217 code" in text
    assert "messages[0].attachment.payload.summary: must be an object, got null" in text
    assert "messages[0].attachment.payload.elements[0].price: must be a number, got str" in text


def test_json_that_does_not_parse_says_so() -> None:
    with pytest.raises(AhaChatValidationError, match=r"message: is a string but not valid JSON \(Expecting"):
        DynamicMessage.parse('{"messages": [')


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+84 908 071 111", "+84908071111"),
        ("0908.071.111", "+84908071111"),
        ("090-807-1111", "+84908071111"),
    ],
)
def test_phones_are_normalised(raw: Any, expected: str) -> None:
    assert normalize_phone(raw) == expected


def test_a_phone_given_as_a_number_is_refused() -> None:
    with pytest.raises(AhaChatValidationError, match="loses its leading 0"):
        normalize_phone(908071111)


@pytest.mark.parametrize(
    "raw", ["12345678", "+84 (908) 071111", "phone", "+" + "1" * 16, "", None, "0908O71111"]
)
def test_bad_phones_are_refused(raw: Any) -> None:
    with pytest.raises(AhaChatValidationError, match="phone: "):
        normalize_phone(raw)


def test_ids_stay_strings() -> None:
    assert validate_user_id(3824547807572463) == "3824547807572463"
    assert validate_user_id(" 3824547807572463 ") == "3824547807572463"
    for bad in (3.824547807572463e15, True, "38245abc", None, [1]):
        with pytest.raises(AhaChatValidationError, match="user_id: "):
            validate_user_id(bad)
    assert (
        User.model_validate({"messenger_user_id": 3824547807572463}).messenger_user_id == "3824547807572463"
    )


def test_tags_and_attributes() -> None:
    assert validate_tags("vip") == ["vip"]
    assert validate_tags('["vip", "loyal", "vip"]') == ["vip", "loyal"]
    assert validate_tags(("a", " b ")) == ["a", "b"]
    assert validate_attributes({"codeso": 99999, "s_d_t": "0908071111", "ok": False, "x": 1.5}) == {
        "codeso": 99999,
        "s_d_t": "0908071111",
        "ok": "no",
        "x": 1.5,
    }
    for bad, rule in [
        ({"a": None}, "attributes.a: values must be text, numbers, booleans, dates, datetimes, lists or"),
        ({"a": float("nan")}, "attributes.a: must be a finite number"),
        ({}, "attributes: must set at least one attribute"),
        ("[1, 2]", "attributes: must be an object of name to value, got list"),
        ({"ahachat_token": "x"}, "attributes.ahachat_token: attribute name 'ahachat_token' is reserved"),
    ]:
        with pytest.raises(AhaChatValidationError) as info:
            validate_attributes(bad)
        assert rule in str(info.value)


def test_message_tags() -> None:
    """``MessageTag.parse`` names AhaChat's list; ``validate_message_tag`` says what may be sent."""
    assert MessageTag.parse(" post_purchase_update ") is MessageTag.POST_PURCHASE_UPDATE
    with pytest.raises(
        AhaChatValidationError, match="use one of CONFIRMED_EVENT_UPDATE, POST_PURCHASE_UPDATE"
    ):
        MessageTag.parse("PROMOTION")
    assert validate_message_tag(None) is None
    assert validate_message_tag(" human_agent ") == "HUMAN_AGENT"
    with pytest.raises(AhaChatValidationError, match="Meta retired it on 27 April 2026"):
        validate_message_tag("post_purchase_update")


def test_recipient_needs_exactly_one() -> None:
    assert Recipient.of(user_id="1234").describe() == "user 1234"
    assert Recipient.of(phone="+84908071111").describe() == "phone +84908071111"
    with pytest.raises(AhaChatValidationError, match=r"give exactly one of them \(both were given\)"):
        Recipient.of(user_id="1", phone="+84908071111")


@pytest.mark.parametrize("name", ["ahachat_token", "ahachat_message_tag", "ahachat_block_name"])
def test_every_name_of_the_broadcast_query_is_reserved(name: str) -> None:
    with pytest.raises(AhaChatValidationError, match=f"attribute name '{name}' is reserved"):
        validate_attributes({name: "x"})
    with pytest.raises(AhaChatValidationError, match=f"attribute name '{name}' is reserved"):
        validate_attributes({name: "x"}, by_phone=True)


def test_messenger_limits_hold_exactly_at_the_limit() -> None:
    """Each limit's own value passes and one more fails: the checks are not off by one."""
    DynamicMessage.text("x" * 2000)
    with pytest.raises(AhaChatValidationError, match="at most 2000 characters, got 2001"):
        DynamicMessage.text("x" * 2001)
    replies = [{"title": f"T{n}", "block_name": "b"} for n in range(13)]
    DynamicMessage.parse([{"text": "?", "quick_replies": replies}])
    with pytest.raises(AhaChatValidationError, match="quick_replies: at most 13"):
        DynamicMessage.parse([{"text": "?", "quick_replies": [*replies, {"title": "X", "block_name": "b"}]}])
    DynamicMessage.parse([{"text": "?", "quick_replies": [{"title": "x" * 20, "block_name": "b"}]}])
    with pytest.raises(AhaChatValidationError, match="title: at most 20"):
        DynamicMessage.parse([{"text": "?", "quick_replies": [{"title": "x" * 21, "block_name": "b"}]}])
    button = {"type": "show_block", "block_name": "b", "title": "Mua"}
    template = {"template_type": "button", "text": "x" * 640, "buttons": [button] * 3}
    DynamicMessage.parse([{"attachment": {"type": "template", "payload": template}}])
    with pytest.raises(AhaChatValidationError, match="at most 640"):
        DynamicMessage.parse(
            [{"attachment": {"type": "template", "payload": {**template, "text": "x" * 641}}}]
        )
    with pytest.raises(AhaChatValidationError, match="buttons: at most 3, got 4"):
        DynamicMessage.parse(
            [{"attachment": {"type": "template", "payload": {**template, "buttons": [button] * 4}}}]
        )
