"""
The JSON API answer that carries held messages: which of them fit in one answer, and its keys.

AhaChat shows whatever the bot's JSON API block gets back: ``{"messages": [...]}`` (AhaChat's help
page), and, per its English page, attributes to set and blocks to go to. The exact names of those
two keys are not published: Chatfuel's, ``set_attributes`` and ``redirect_to_blocks``, are used.
They are PROVISIONAL: a connection's extra ``answer_keys`` corrects them, as ``endpoints`` corrects
a path (:func:`answer_keys`).

One answer carries held messages in their order, as long as it can keep that order and their
meaning (:func:`fits`):

- after a piece that goes to a block, nothing more: the bot goes to the blocks after showing every
  message of the answer, so a message held later would be shown before that block;
- no two pieces may set the same attribute to different values (an answer sets each once);
- at most :data:`MAX_PER_ANSWER` held messages.

The rest wait for the customer's next call. No Airflow import.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from airflow_provider_ahachat.exceptions import AhaChatValidationError
from airflow_provider_ahachat.held.messages import PARTS, Piece
from airflow_provider_ahachat.models import corrected

__all__ = ["ANSWER_KEYS", "MAX_PER_ANSWER", "answer_keys", "build_answer", "fits"]

#: The keys of the JSON API answer, by their canonical names. ``messages`` is on AhaChat's help page;
#: ``set_attributes`` and ``redirect_to_blocks`` are PROVISIONAL (Chatfuel's): a connection's extra
#: ``answer_keys`` corrects them.
ANSWER_KEYS: Mapping[str, str] = MappingProxyType({part: part for part in PARTS})
#: The most held messages one answer carries.
MAX_PER_ANSWER = 25

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]{0,63}")


def answer_keys(overrides: Any = None, field: str = "answer_keys") -> Mapping[str, str]:
    """
    :data:`ANSWER_KEYS` with some keys corrected, as a connection's extra ``answer_keys`` says: a
    mapping (or a JSON object string) of canonical name to the key AhaChat reads, e.g.
    ``{"redirect_to_blocks": "redirect_to_block"}``.

    :param overrides: the correction, or None (or ``""``) for none.
    :param field: the field to name in errors.
    :raises AhaChatValidationError: for an unknown name (listing the valid ones), a key that is not
        a name, or two parts given the same key, each naming its field.
    """
    shape = ('object of part to key, e.g. {"set_attributes": "set_attributes"}', "a part of the answer")
    keys = corrected(ANSWER_KEYS, overrides, field, shape, _key)
    if len(set(keys.values())) < len(keys):
        raise AhaChatValidationError(
            f"{field}: two parts of the answer cannot have the same key ({dict(keys)})"
        )
    return keys


def _key(_canonical: str, key: Any, field: str) -> str:
    """A key of the answer as a connection corrects it: a name AhaChat could read."""
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise AhaChatValidationError(
            f"{field}: must be a key of 1 to 64 letters, digits, '_' or '-'; got {key!r}"
        )
    return key


def _conflicts(taken: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    return any(name in taken and taken[name] != value for name, value in wanted.items())


def fits(pieces: Sequence[Piece], most: int = MAX_PER_ANSWER) -> int:
    """
    How many of ``pieces``, from the first, one answer carries in their order (see the module).

    :param pieces: the customer's held messages, oldest first.
    :param most: the most one answer carries.
    """
    taken: dict[str, Any] = {}
    for count, piece in enumerate(pieces):
        ended = count > 0 and bool(pieces[count - 1].redirect_to_blocks)
        if count >= most or ended or _conflicts(taken, piece.set_attributes):
            return count
        taken.update(piece.set_attributes)
    return len(pieces)


def build_answer(
    pieces: Sequence[Piece],
    *,
    first: Sequence[Mapping[str, Any]] = (),
    keys: Mapping[str, str] = ANSWER_KEYS,
) -> dict[str, Any]:
    """
    The JSON API answer: the messages ``first`` (an event's acknowledgement), then ``pieces`` in order.

    ``{}`` when there is nothing to show. ``pieces`` must be what :func:`fits` allows.

    :param pieces: the held messages to deliver, oldest first.
    :param first: messages shown before them.
    :param keys: the answer's keys (:func:`answer_keys`).
    """
    messages = [dict(message) for message in first]
    attributes: dict[str, Any] = {}
    blocks: list[str] = []
    for piece in pieces:
        messages.extend(dict(message) for message in piece.messages)
        attributes.update(piece.set_attributes)
        blocks.extend(piece.redirect_to_blocks)
    parts = {"messages": messages, "set_attributes": attributes, "redirect_to_blocks": blocks}
    return {keys[name]: value for name, value in parts.items() if value}
