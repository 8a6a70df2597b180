"""
The inbound rules in plain Python, quickly: strict JSON, the nesting count, the escaping and masking
of logged values. tests/test_inbound_attack.py checks the same through a real API server.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest

from airflow_provider_ahachat.inbound.intake import (
    MAX_DEPTH,
    Refused,
    check_json,
    escape,
    keep_secret,
    loggable,
    nesting_depth,
    parse_json,
)


@pytest.mark.parametrize(
    ("body", "depth"),
    [
        (b"{}", 1),
        (b'{"a": [1, {"b": []}]}', 4),
        (b'{"a": "[[[[{{{{"}', 1),  # brackets inside a string do not count
        (b'{"a": "\\"[[[", "b": [[]]}', 3),  # nor after an escaped quote
        (b"[" * 8000 + b"]" * 8000, 8000),
        (b"12", 0),
    ],
)
def test_the_nesting_is_counted_without_parsing(body: bytes, depth: int) -> None:
    assert nesting_depth(body) == depth


@pytest.mark.parametrize(
    "body",
    [
        b'{"x": NaN}',
        b'{"x": [Infinity]}',
        b'{"x": {"y": -Infinity}}',
        b'{"x": 1e999}',
        b'{"x": -4.5E+308}',
        b'{"x": 9223372036854775808}',
        b'{"x": [-9223372036854775809]}',
        b'{"x": "\\u0000"}',
        b'{"\\ud800": 1}',
        b'{"x": "\\udfff"}',
        b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1),
        b"{" * 8000 + b"}" * 8000,
        b"\xff\xfe{}",
        b'{"x": 1',
    ],
)
def test_strict_json_refuses_what_some_reader_cannot_take(body: bytes) -> None:
    with pytest.raises(Refused) as refused:
        parse_json(body)
    assert refused.value.status == 400


def test_strict_json_takes_finite_numbers_and_text_at_the_limits() -> None:
    body = {"i": [2**63 - 1, -(2**63)], "f": [1e308, -0.0, 5e-324], "t": "Đơn \u2028 ✓ \U0001f600"}
    assert parse_json(json.dumps(body).encode()) == body
    at_limit = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert parse_json(at_limit.encode()) is not None
    check_json({"fields": json.loads(at_limit)}, MAX_DEPTH + 1)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 2**64, {1: "a"}, b"x", {"a": {"b": object()}}])
def test_any_value_is_held_to_the_same_rules(value: Any) -> None:
    with pytest.raises(Refused):
        check_json({"fields": value})


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("a\nb", "a\\nb"),
        ("a\r\nb", "a\\r\\nb"),
        ("a\x85b", "a\\x85b"),
        ("a\u2028b\u2029", "a\\u2028b\\u2029"),
        ("\x1b[2K", "\\x1b[2K"),
        ("\u202eabc", "\\u202eabc"),
        ("a\\nb", "a\\\\nb"),  # a backslash itself, so that an escape cannot be faked
        ("Đồng ý ✓", "Đồng ý ✓"),
    ],
)
def test_logged_values_are_escaped_onto_one_line(text: str, shown: str) -> None:
    assert escape(text) == shown
    assert len(escape(text).splitlines()) == 1


def test_a_logged_value_is_masked_then_cut() -> None:
    secret = "kept/secret+5b0f3c9e71d24a6f8e2b"
    keep_secret(secret)
    assert loggable(f"x{secret}y", 100) == "x***y"
    assert loggable(f"t={quote(secret, safe='')}", 100) == "t=***"  # URL-encoded too
    long = loggable("a" * 40, 16)
    assert long == "a" * 16 + "…(40 characters)"
    assert loggable("\n" * 3, 2) == "\\n\\n…(3 characters)"
