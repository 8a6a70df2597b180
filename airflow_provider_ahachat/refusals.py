"""
Messenger's refusals, as AhaChat passes them on: recognised in every shape, in one place.

Meta's Send API refuses a message with a Graph error, such as ``{"error": {"message": "(#10) This
message is sent outside of allowed window", "type": "OAuthException", "code": 10, "error_subcode":
2018278, "fbtrace_id": "..."}}``. AhaChat does not document how it passes one on: as that object
or as its text, in the answer's ``message``, ``result`` or ``error``, nested, or as a JSON string,
at whatever status (400, 422, 500, or 200 with ``"success": false``). :func:`find_refusal` finds it
wherever it is, and :func:`refusal_error` turns it into the provider's error:

- outside the 24-hour window (code 10, subcode 2018278): :class:`AhaChatOutsideWindowError`;
- the person is not available (code 551): :class:`AhaChatRecipientUnavailableError`, a kind of
  the former (unreachable now);
- ``(#100) Invalid parameter`` to a request that carried a message tag: the tag was refused,
  :class:`AhaChatMessageTagRefusedError`.

None of them is an unknown outcome, whatever the status: Messenger refused, nothing was sent, and
the same request would be refused again, so the client never retries them. No Airflow import here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_ahachat.exceptions import (
    OUTSIDE_WINDOW_RULE,
    AhaChatAPIError,
    AhaChatInvalidRequestError,
    AhaChatMessageTagRefusedError,
    AhaChatOutsideWindowError,
    AhaChatRecipientUnavailableError,
)
from airflow_provider_ahachat.models import INSTEAD_OF_A_TAG, RETIRED_MESSAGE_TAGS
from airflow_provider_ahachat.redaction import bounded

if TYPE_CHECKING:
    from airflow_provider_ahachat.request import ApiRequest

__all__ = ["MetaRefusal", "find_refusal", "raise_refusal", "refusal_error"]

#: Meta's codes the provider acts on.
OUTSIDE_WINDOW_CODE = 10
OUTSIDE_WINDOW_SUBCODE = 2018278
UNAVAILABLE_CODE = 551
INVALID_PARAMETER_CODE = 100

#: The keys under which an answer may carry Meta's error, at any depth.
_KEYS = ("error", "message", "result", "errors", "data")
_MAX_DEPTH = 5
_CODE_IN_TEXT = re.compile(r"\(#(\d{1,6})\)")
_WINDOW_TEXT = re.compile(r"outside (?:of )?(?:the )?(?:allowed|24[- ]hours?|messaging) window", re.I)
_UNAVAILABLE_TEXT = re.compile(r"(?:isn't|isn’t|is not) (?:available right now|receiving messages)", re.I)
#: Marks of Meta's error object, beside its ``code``.
_META_FIELDS = ("type", "error_subcode", "fbtrace_id", "error_user_msg")


@dataclass(frozen=True)
class MetaRefusal:
    """
    Meta's error, as found in an answer.

    :param code: Meta's error code (10, 551, 100...).
    :param subcode: its ``error_subcode``, if given.
    :param text: its message, e.g. ``(#10) This message is sent outside of allowed window``.
    """

    code: int
    subcode: int | None = None
    text: str = ""

    @property
    def kind(self) -> str | None:
        """``outside_window``, ``unavailable``, ``invalid_parameter``, or None for another error."""
        if self.subcode == OUTSIDE_WINDOW_SUBCODE or (
            self.code == OUTSIDE_WINDOW_CODE and _WINDOW_TEXT.search(self.text)
        ):
            return "outside_window"
        if self.code == UNAVAILABLE_CODE:
            return "unavailable"
        rest = _CODE_IN_TEXT.sub("", self.text).strip().lower()
        if (
            self.code == INVALID_PARAMETER_CODE
            and self.subcode is None
            and (not rest or "invalid parameter" in rest)
        ):
            return "invalid_parameter"
        return None

    def describe(self) -> str:
        """``Meta's error 10 (subcode 2018278): (#10) This message ...``."""
        subcode = f" (subcode {self.subcode})" if self.subcode is not None else ""
        return f"Meta's error {self.code}{subcode}" + (f": {self.text}" if self.text else "")


def _whole(value: Any) -> int | None:
    """A code given as a number or a string of digits."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _from_text(text: str) -> MetaRefusal | None:
    found = _CODE_IN_TEXT.search(text)
    if found:
        return MetaRefusal(int(found.group(1)), None, text.strip())
    if _WINDOW_TEXT.search(text):
        return MetaRefusal(OUTSIDE_WINDOW_CODE, None, text.strip())
    if _UNAVAILABLE_TEXT.search(text):
        return MetaRefusal(UNAVAILABLE_CODE, None, text.strip())
    return None


def _from_object(node: Mapping[str, Any], under_error: bool) -> MetaRefusal | None:
    code = _whole(node.get("code"))
    message = node.get("message")
    text = message.strip() if isinstance(message, str) else ""
    if code is None or not (under_error or any(name in node for name in _META_FIELDS)):
        return None
    return MetaRefusal(code, _whole(node.get("error_subcode")), text)


def _found(node: Any, depth: int = 0, under_error: bool = False) -> Iterator[MetaRefusal]:
    """Every Meta error in ``node``, the outer ones first."""
    if depth > _MAX_DEPTH:
        return
    if isinstance(node, str):
        yield from _found_in_text(node.strip(), depth, under_error)
    elif isinstance(node, Mapping):
        refusal = _from_object(node, under_error)
        if refusal is not None:  # Meta's own object: its fields say all, its message included
            yield refusal
            return
        for key in _KEYS:
            if key in node:
                yield from _found(node[key], depth + 1, key in ("error", "errors"))
    elif isinstance(node, list):
        for item in node[:10]:
            yield from _found(item, depth + 1, under_error)


def _found_in_text(text: str, depth: int, under_error: bool) -> Iterator[MetaRefusal]:
    """Meta's error in a text: Meta's answer passed on as a JSON string, or Meta's message."""
    if text.startswith(("{", "[")):
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if parsed is not None:
            yield from _found(parsed, depth + 1, under_error)
            return
    refusal = _from_text(text)
    if refusal is not None:
        yield refusal


def find_refusal(payload: Any, body: str) -> MetaRefusal | None:
    """
    The refusal of Meta's that an answer passes on (its JSON ``payload``, or its text ``body`` when
    it is not JSON), if it is one the provider acts on; otherwise None.
    """
    for refusal in _found(payload if payload is not None else body):
        if refusal.kind is not None:
            return refusal
    return None


def raise_refusal(
    request: ApiRequest, status: int, payload: Any, body: str, *, token: str | None = None
) -> None:
    """
    Raise the provider's error for the refusal of Messenger's that a failed answer passes on, if
    it passes one on: any status but a 2xx that does not say ``"success": false``, or a redirect.
    """
    succeeded = 200 <= status < 300 and not (isinstance(payload, Mapping) and payload.get("success") is False)
    if succeeded or 300 <= status < 400:
        return
    refusal = find_refusal(payload, body)
    if refusal is not None:
        raise refusal_error(request, status, refusal, token=token)


def refusal_error(
    request: ApiRequest, status: int, refusal: MetaRefusal, *, token: str | None = None
) -> AhaChatAPIError:
    """The provider's error for ``refusal``, the answer AhaChat gave with ``status`` to ``request``."""
    meta = bounded(refusal.describe(), token)
    head = f"AhaChat answered {status} to {request.describe()}"
    who = request.recipient.describe() if request.recipient is not None else "the customer"
    known: dict[str, Any] = {
        "status": status,
        "api_message": bounded(refusal.text, token),
        "meta_code": refusal.code,
    }
    kind = refusal.kind
    tag = dict(request.params).get("ahachat_message_tag")
    if kind == "outside_window":
        when = "7 days ago, past what HUMAN_AGENT allows" if tag == "HUMAN_AGENT" else "24 hours ago"
        return AhaChatOutsideWindowError(
            f"{head}: Messenger refused to message {who}, who last wrote more than {when} ({meta}). "
            f"{OUTSIDE_WINDOW_RULE}. Nothing was sent; only the customer can open the window again, "
            "by writing or tapping a button",
            **known,
        )
    if kind == "unavailable":
        return AhaChatRecipientUnavailableError(
            f"{head}: Messenger says {who} isn't available right now ({meta}): they blocked the page, "
            "or cannot receive its messages now. Nothing was sent",
            **known,
        )
    if tag:
        why = RETIRED_MESSAGE_TAGS.get(tag.upper(), "Meta does not allow this page that tag")
        return AhaChatMessageTagRefusedError(
            f"{head}: Messenger refused the message tag {tag} ({meta}), not a bad parameter of ours: "
            f"{why}. Nothing was sent. Instead, {INSTEAD_OF_A_TAG}",
            **known,
        )
    return AhaChatInvalidRequestError(f"{head}: Messenger refused the request as invalid ({meta})", **known)
