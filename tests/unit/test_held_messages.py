"""
What a held message is and the answer that carries it: validation before storing (the actions'
own rules), the rules again on what comes back from storage, which messages fit in one answer, and
the answer's keys (provisional, corrected per connection as the paths are).
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from airflow_provider_ahachat.exceptions import AhaChatValidationError
from airflow_provider_ahachat.held import DEFAULT_HOLD_FOR, MAX_HOLD_FOR, validate_hold_for
from airflow_provider_ahachat.held.answer import ANSWER_KEYS, MAX_PER_ANSWER, answer_keys, build_answer, fits
from airflow_provider_ahachat.held.messages import Piece, held_piece, parse_piece

GALLERY = {
    "attachment": {
        "type": "template",
        "payload": {
            "template_type": "generic",
            "elements": [
                {"title": "Áo thun", "subtitle": "199.000đ", "image_url": "https://example.com/t.png"}
            ],
        },
    }
}


def text(value: str) -> Piece:
    return held_piece("send_text", {"text": value})


def broadcast(block: str, **attributes: Any) -> Piece:
    return held_piece("broadcast_block", {"block_name": block, "attributes": attributes})


# --------------------------------------------------------------------------- held_piece


@pytest.mark.parametrize(
    ("kind", "arguments", "expected"),
    [
        ("send_text", {"text": "Đơn DH10231 đã gửi"}, {"messages": [{"text": "Đơn DH10231 đã gửi"}]}),
        (
            "send_message",
            {"message": [GALLERY, {"text": "Xem thêm"}]},
            {"messages": [GALLERY, {"text": "Xem thêm"}]},
        ),
        (
            "send_message",
            json.dumps({"messages": [{"text": "Chọn size"}], "set_attributes": {"hoi": True}}),
            None,
        ),
        (
            "broadcast_block",
            {
                "block_name": " giao_hang ",
                "attributes": {"order_id": "DH10231", "total": 199000.0, "paid": True},
            },
            {
                "set_attributes": {"order_id": "DH10231", "total": 199000, "paid": "yes"},
                "redirect_to_blocks": ["giao_hang"],
            },
        ),
        (
            "broadcast_block",
            {"block_name": "menu", "message_tag": "HUMAN_AGENT"},
            {"redirect_to_blocks": ["menu"]},
        ),
    ],
)
def test_each_kind_is_held_as_the_action_validates_it(kind: str, arguments: Any, expected: Any) -> None:
    if isinstance(arguments, str):  # a dynamic message given as JSON text
        arguments = {"message": arguments}
        expected = {"messages": [{"text": "Chọn size"}], "set_attributes": {"hoi": "yes"}}
    piece = held_piece(kind, arguments)
    assert piece.to_json() == expected
    assert parse_piece(piece.dumps()) == piece


def test_a_broadcast_for_one_recipient_takes_their_own_attributes_over_the_shared_ones() -> None:
    piece = held_piece(
        "broadcast_block",
        {"block_name": "ship", "attributes": {"order_id": "X", "shop": "A"}},
        {"order_id": "DH7"},
    )
    assert piece.set_attributes == {"order_id": "DH7", "shop": "A"}


@pytest.mark.parametrize(
    ("kind", "arguments", "named"),
    [
        ("send_text", {"text": ""}, "text: must not be empty"),
        ("send_text", {"text": "x" * 2001}, "text: at most 2000 characters"),
        ("send_text", {}, "text: must be a string"),
        ("send_text", {"text": "hi", "block_name": "b"}, "block_name: not an argument of 'send_text'"),
        ("send_message", {"message": {"messages": []}}, "messages"),
        (
            "send_message",
            {"message": {"text": "Chọn", "quick_replies": [{"title": "M", "block_name": "m"}] * 14}},
            "quick_replies",
        ),
        ("send_message", {"message": "{not json"}, "message: is a string but not valid JSON"),
        ("broadcast_block", {"block_name": "  "}, "block_name: must be a non-empty string"),
        (
            "broadcast_block",
            {"block_name": "b", "attributes": {"ahachat_token": "x"}},
            "attributes.ahachat_token",
        ),
        (
            "broadcast_block",
            {"block_name": "b", "attributes": {"n": float("nan")}},
            "attributes.n: must be a finite",
        ),
        ("broadcast_block", {"block_name": "b", "attributes": ["a"]}, "attributes: must be an object"),
        ("add_tags", {"tags": ["vip"]}, "kind: 'add_tags' cannot be held"),
    ],
)
def test_a_bad_message_is_refused_before_it_is_stored_naming_the_field(
    kind: str, arguments: dict[str, Any], named: str
) -> None:
    with pytest.raises(AhaChatValidationError) as caught:
        held_piece(kind, arguments)
    assert named in str(caught.value)


def test_a_broadcast_names_every_problem_at_once() -> None:
    with pytest.raises(AhaChatValidationError) as caught:
        held_piece("broadcast_block", {"block_name": "", "attributes": {"ahachat_block_name": "x"}})
    assert len(caught.value.problems) == 2


@pytest.mark.parametrize(
    ("stored", "named"),
    [
        ("not json", "piece: is a string but not valid JSON"),
        ("[1, 2]", "piece: must be a JSON object"),
        ("{}", "piece: must hold some of"),
        ('{"messages": [{"text": "a"}], "extra": 1}', "piece: must hold some of"),
        ('{"messages": [{"text": ""}]}', "messages[0]"),
        ('{"messages": [{"text": "a"}], "set_attributes": {"ahachat_token": "t"}}', "set_attributes"),
        ('{"redirect_to_blocks": "menu"}', "piece.redirect_to_blocks: must be a list"),
        ('{"redirect_to_blocks": ["menu", ""]}', "piece.redirect_to_blocks[1]"),
        ('{"redirect_to_blocks": ["menu"], "set_attributes": {"a": null}}', "piece.set_attributes.a"),
    ],
)
def test_bad_stored_data_is_refused_when_read_back(stored: str, named: str) -> None:
    with pytest.raises(AhaChatValidationError) as caught:
        parse_piece(stored)
    assert named in str(caught.value)


# --------------------------------------------------------------------------- hold_for


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, DEFAULT_HOLD_FOR),
        (3600, timedelta(hours=1)),
        (0.5, timedelta(seconds=0.5)),
        (MAX_HOLD_FOR, MAX_HOLD_FOR),
    ],
)
def test_hold_for_takes_a_timedelta_or_seconds(given: Any, expected: timedelta) -> None:
    assert validate_hold_for(given) == expected
    assert timedelta(days=7) == DEFAULT_HOLD_FOR


@pytest.mark.parametrize(
    "given",
    [0, -1, timedelta(0), MAX_HOLD_FOR + timedelta(seconds=1), "7d", True, float("inf"), float("nan")],
)
def test_hold_for_out_of_its_range_is_refused(given: Any) -> None:
    with pytest.raises(AhaChatValidationError, match="hold_for: must be a timedelta or seconds"):
        validate_hold_for(given)


# --------------------------------------------------------------------------- what fits in one answer


def test_texts_and_messages_all_fit_up_to_the_most_an_answer_carries() -> None:
    pieces = [text(f"m{i}") for i in range(MAX_PER_ANSWER + 5)]
    assert fits(pieces) == MAX_PER_ANSWER
    assert fits(pieces[:3]) == 3
    assert fits(pieces, most=2) == 2
    assert fits([]) == 0


def test_a_block_ends_the_answer_so_that_later_messages_are_not_shown_before_it() -> None:
    pieces = [text("a"), broadcast("ship", order_id="1"), text("b")]
    assert fits(pieces) == 2
    assert fits(pieces[1:]) == 1
    assert fits([broadcast("x"), broadcast("y")]) == 1


def test_two_pieces_that_set_an_attribute_to_different_values_go_in_different_answers() -> None:
    with_size = held_piece(
        "send_message", {"message": {"messages": [{"text": "a"}], "set_attributes": {"size": "M"}}}
    )
    other_size = held_piece(
        "send_message", {"message": {"messages": [{"text": "b"}], "set_attributes": {"size": "L"}}}
    )
    same_size = held_piece(
        "send_message", {"message": {"messages": [{"text": "c"}], "set_attributes": {"size": "M"}}}
    )
    assert fits([with_size, same_size, other_size]) == 2
    assert fits([with_size, broadcast("ship", size="L")]) == 1
    assert fits([with_size, broadcast("ship", size="M")]) == 2


def test_the_answer_shows_the_acknowledgement_first_then_the_held_messages_in_order() -> None:
    pieces = [
        text("một"),
        held_piece("send_message", {"message": {"messages": [GALLERY], "set_attributes": {"seen": "yes"}}}),
        broadcast("ship", order_id="DH10231"),
    ]
    answer = build_answer(pieces, first=[{"text": "Đã nhận"}])
    assert answer == {
        "messages": [{"text": "Đã nhận"}, {"text": "một"}, GALLERY],
        "set_attributes": {"seen": "yes", "order_id": "DH10231"},
        "redirect_to_blocks": ["ship"],
    }
    assert build_answer([]) == {}
    assert build_answer([], first=[{"text": "ok"}]) == {"messages": [{"text": "ok"}]}
    assert build_answer([broadcast("menu")]) == {"redirect_to_blocks": ["menu"]}


# --------------------------------------------------------------------------- the answer's keys


def test_the_answer_keys_are_chatfuels_unless_the_connection_corrects_them() -> None:
    assert dict(answer_keys()) == {
        "messages": "messages",
        "set_attributes": "set_attributes",
        "redirect_to_blocks": "redirect_to_blocks",
    }
    assert answer_keys("") is ANSWER_KEYS
    keys = answer_keys('{"redirect_to_blocks": "redirect_to_block", "set_attributes": "attributes"}')
    assert keys["messages"] == "messages"
    answer = build_answer([broadcast("ship", order_id="7")], first=[{"text": "ok"}], keys=keys)
    assert answer == {
        "messages": [{"text": "ok"}],
        "attributes": {"order_id": "7"},
        "redirect_to_block": ["ship"],
    }


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (
            {"redirect": "go"},
            "answer_keys.redirect: not a part of the answer; use one of messages, set_attributes",
        ),
        ({"messages": ""}, "answer_keys.messages: must be a key"),
        ({"messages": "a b"}, "answer_keys.messages: must be a key"),
        ({"messages": 3}, "answer_keys.messages: must be a key"),
        ({"set_attributes": "messages"}, "answer_keys: two parts of the answer cannot have the same key"),
        (["messages"], "answer_keys: must be an object of part to key"),
        ("{oops", "answer_keys: is a string but not valid JSON"),
    ],
)
def test_a_bad_correction_of_the_keys_is_refused_naming_the_field(overrides: Any, named: str) -> None:
    with pytest.raises(AhaChatValidationError) as caught:
        answer_keys(overrides)
    assert named in str(caught.value)
