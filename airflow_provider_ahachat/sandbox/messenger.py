"""
Messenger's rules, as the sandbox enforces them on every message it delivers: Meta's as of
December 2026, or, for comparison, as they were before 27 April 2026.

Meta's Send API decides whether a message reaches a customer, and AhaChat passes its refusals on.
The sandbox refuses exactly what Messenger refuses, the way AhaChat passes it on (the answer's
``message``, or ``result`` for the Broadcast API, carries Meta's text; its ``error`` carries Meta's
error object; the shape is the sandbox's choice, documented in ``docs/ahachat-api.md``):

- a message tag Meta retired (``CONFIRMED_EVENT_UPDATE``, ``POST_PURCHASE_UPDATE``,
  ``ACCOUNT_UPDATE``, since 27 April 2026) or limits to news pages (``NON_PROMOTIONAL_SUBSCRIPTION``):
  400, ``(#100) Invalid parameter``, inside the 24-hour window as well as outside it;
- a customer who unsubscribed (blocked the page): 422, ``(#551) This person isn't available right now``;
- a message to a customer whose last message or tap is more than 24 hours old: 422, ``(#10) This
  message is sent outside of allowed window`` (subcode 2018278), unless it carries ``HUMAN_AGENT``
  and the last message is at most 7 days old.

``messenger_rules="2025"`` restores the rules before 27 April 2026: a broadcast with any of the five
tags AhaChat lists reaches the customer at any time (``HUMAN_AGENT`` within 7 days), as if the page
were a news page for ``NON_PROMOTIONAL_SUBSCRIPTION``. Text and dynamic messages, which carry no
tag, keep the 24-hour rule under both.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from airflow_provider_ahachat.models import RETIRED_MESSAGE_TAGS, MessageTag

#: How long after a customer's last message or tap the bot may send a standard message.
MESSAGING_WINDOW = timedelta(hours=24)
#: How long after it a person may reply with the ``HUMAN_AGENT`` tag.
HUMAN_AGENT_WINDOW = timedelta(days=7)

#: The rules the sandbox can enforce: Meta's as of December 2026, or before 27 April 2026.
RULES_2026 = "2026"
RULES_BEFORE_APRIL_2026 = "2025"
MESSENGER_RULES = (RULES_2026, RULES_BEFORE_APRIL_2026)
#: The environment variable the sandbox's command line reads its ``--messenger-rules`` from.
RULES_ENV = "AHACHAT_SANDBOX_MESSENGER_RULES"

OUTSIDE_WINDOW_TEXT = "(#10) This message is sent outside of allowed window"
UNAVAILABLE_TEXT = "(#551) This person isn't available right now"
INVALID_PARAMETER_TEXT = "(#100) Invalid parameter"


@dataclass(frozen=True)
class Refusal:
    """
    Messenger's refusal of one message, as AhaChat passes it on.

    :param status: the HTTP status the sandbox answers with.
    :param error: Meta's error object.
    """

    status: int
    error: dict[str, Any]

    @property
    def text(self) -> str:
        """Meta's message, such as ``(#10) This message is sent outside of allowed window``."""
        return str(self.error["message"])


def meta_error(code: int, message: str, subcode: int | None = None) -> dict[str, Any]:
    """Meta's Graph API error object, as the Send API answers it."""
    error: dict[str, Any] = {"message": message, "type": "OAuthException", "code": code}
    if subcode is not None:
        error["error_subcode"] = subcode
    error["fbtrace_id"] = "A" + secrets.token_urlsafe(16)
    return error


def refusal(
    *,
    last_interaction_at: datetime | None,
    subscribed: bool,
    tag: MessageTag | None,
    now: datetime,
    rules: str = RULES_2026,
) -> Refusal | None:
    """
    Why Messenger refuses a message carrying ``tag`` (None: no tag) to this customer now, or None
    when it delivers it. The tag is judged first: a retired tag is refused whoever the customer.
    """
    legacy = rules == RULES_BEFORE_APRIL_2026
    if tag is not None and tag.value in RETIRED_MESSAGE_TAGS and not legacy:
        return Refusal(400, meta_error(100, INVALID_PARAMETER_TEXT))
    if not subscribed:
        return Refusal(422, meta_error(551, UNAVAILABLE_TEXT, 1545041))
    if tag is not None and tag is not MessageTag.HUMAN_AGENT:  # before April 2026: any time
        return None
    window = HUMAN_AGENT_WINDOW if tag is MessageTag.HUMAN_AGENT else MESSAGING_WINDOW
    if last_interaction_at is None or now - last_interaction_at > window:
        return Refusal(422, meta_error(10, OUTSIDE_WINDOW_TEXT, 2018278))
    return None
