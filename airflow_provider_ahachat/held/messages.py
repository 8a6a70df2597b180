"""
What a held message is: a piece of the bot's JSON API answer, validated as the action it stands for.

- A text (``send_text``) and a dynamic message (``send_message``) are held as they are: their
  ``messages`` (a dynamic message also with its ``set_attributes`` and ``redirect_to_blocks``).
- A broadcast of a block (``broadcast_block``) is held as "set these attributes, then go to this
  block": ``set_attributes`` and ``redirect_to_blocks``. Its message tag is not kept: an answer to
  the customer's own call needs none.

:func:`held_piece` validates a message before it is stored, with the validators the actions use
(:class:`~airflow_provider_ahachat.models.DynamicMessage`, block names, attributes);
:func:`parse_piece` holds what comes back from storage to the same rules before it is delivered.
No Airflow import.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from airflow_provider_ahachat.exceptions import AhaChatValidationError
from airflow_provider_ahachat.models import (
    DynamicMessage,
    WireValue,
    load_json,
    validate_attributes,
    validate_block_name,
)

__all__ = ["KINDS", "Piece", "held_piece", "parse_piece"]

#: The actions whose messages can be held, and their arguments (a broadcast's tag is accepted, not kept).
KINDS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "send_text": ("text",),
        "send_message": ("message",),
        "broadcast_block": ("block_name", "attributes", "message_tag"),
    }
)
#: The parts of an answer a piece may have, by their canonical names.
PARTS = ("messages", "set_attributes", "redirect_to_blocks")


@dataclass(frozen=True)
class Piece:
    """
    A part of a JSON API answer, by the canonical names of its keys.

    :param messages: the messages to show, in order.
    :param set_attributes: attributes to set on the customer.
    :param redirect_to_blocks: blocks to start after the messages.
    """

    messages: tuple[Mapping[str, Any], ...] = ()
    set_attributes: Mapping[str, WireValue] = field(default_factory=dict)
    redirect_to_blocks: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The piece as JSON, with the canonical keys; empty parts left out."""
        found = {
            "messages": [dict(m) for m in self.messages],
            "set_attributes": dict(self.set_attributes),
            "redirect_to_blocks": list(self.redirect_to_blocks),
        }
        return {name: value for name, value in found.items() if value}

    def dumps(self) -> str:
        """The piece as JSON text, as it is stored."""
        return json.dumps(self.to_json(), ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _from_message(message: DynamicMessage) -> Piece:
    return Piece(
        messages=tuple(message.to_payload()["messages"]),
        set_attributes=dict(message.set_attributes or {}),
        redirect_to_blocks=tuple(message.redirect_to_blocks or ()),
    )


def held_piece(kind: str, arguments: Mapping[str, Any], attributes: Mapping[str, Any] | None = None) -> Piece:
    """
    The piece a message of ``kind`` is held as, validated as the action validates it.

    :param kind: the action: ``send_text``, ``send_message`` or ``broadcast_block``.
    :param arguments: the action's arguments (``text``; ``message``; ``block_name``, ``attributes``
        and ``message_tag``).
    :param attributes: a recipient's own attributes (a broadcast's, from a run for many), set over
        ``arguments["attributes"]``.
    :raises AhaChatValidationError: naming each bad argument and its rule.
    """
    if kind not in KINDS:
        raise AhaChatValidationError(f"kind: {kind!r} cannot be held; use one of {', '.join(KINDS)}")
    unknown = sorted(set(arguments) - set(KINDS[kind]))
    if unknown:
        raise AhaChatValidationError(
            [f"{name}: not an argument of {kind!r} (it takes {', '.join(KINDS[kind])})" for name in unknown]
        )
    if kind == "send_text":
        text: Any = arguments.get("text")  # any value: validate_text names what is wrong with it
        return _from_message(DynamicMessage.text(text, "text"))
    if kind == "send_message":
        return _from_message(DynamicMessage.parse(arguments.get("message"), "message"))
    return _broadcast(arguments, attributes)


def _broadcast(arguments: Mapping[str, Any], own: Mapping[str, Any] | None) -> Piece:
    problems: list[str] = []
    block = attributes = None
    try:
        block = validate_block_name(arguments.get("block_name"), "block_name")
    except AhaChatValidationError as err:
        problems.extend(err.problems)
    given = load_json(arguments.get("attributes"), "attributes") or {}
    try:
        merged = {**given, **(own or {})} if isinstance(given, Mapping) else given
        attributes = validate_attributes(merged, "attributes", allow_empty=True)
    except AhaChatValidationError as err:
        problems.extend(err.problems)
    if problems:
        raise AhaChatValidationError(problems)
    assert block is not None and attributes is not None
    return Piece(set_attributes=attributes, redirect_to_blocks=(block,))


def parse_piece(stored: Any) -> Piece:
    """
    A piece as it comes back from storage (JSON text or an object), held to the rules again.

    :param stored: what :meth:`Piece.dumps` wrote, or anything else that storage holds.
    :raises AhaChatValidationError: when it is not a valid piece, naming the part and the rule.
    """
    value = load_json(stored, "piece")
    if not isinstance(value, Mapping):
        raise AhaChatValidationError(f"piece: must be a JSON object, got {type(value).__name__}")
    unknown = sorted(set(value) - set(PARTS))
    if unknown or not any(value.get(part) for part in PARTS):
        raise AhaChatValidationError(f"piece: must hold some of {', '.join(PARTS)} and nothing else")
    if value.get("messages"):
        return _from_message(DynamicMessage.parse(dict(value), "piece"))
    redirect = value.get("redirect_to_blocks") or []
    if not isinstance(redirect, list):
        raise AhaChatValidationError("piece.redirect_to_blocks: must be a list of block names")
    blocks = tuple(
        validate_block_name(name, f"piece.redirect_to_blocks[{i}]") for i, name in enumerate(redirect)
    )
    attributes = validate_attributes(value.get("set_attributes"), "piece.set_attributes", allow_empty=True)
    return Piece(set_attributes=attributes, redirect_to_blocks=blocks)
