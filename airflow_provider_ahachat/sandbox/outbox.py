"""
What the sandbox delivered and what it was asked: the outbox, how a block's placeholders are filled,
and the request log.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

from airflow_provider_ahachat.models import (
    attribute_query_value,
)
from airflow_provider_ahachat.sandbox.world import REDACTED, isoformat

_PLACEHOLDER = re.compile(r"\{\{\s*([^{}]+?)\s*\}\}")


def render(node: Any, context: Mapping[str, Any], unresolved: list[str]) -> Any:
    """Copy ``node``, replacing ``{{name}}`` in every string; names not in ``context`` stay as written."""
    if isinstance(node, str):
        if "{{" not in node:
            return node

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in context:
                if name not in unresolved:
                    unresolved.append(name)
                return match.group(0)
            value = context[name]
            return "" if value is None else attribute_query_value(value)

        return _PLACEHOLDER.sub(substitute, node)
    if isinstance(node, Mapping):
        return {key: render(value, context, unresolved) for key, value in node.items()}
    if isinstance(node, list):
        return [render(value, context, unresolved) for value in node]
    return node


def summarize(messages: Iterable[Mapping[str, Any]]) -> str:
    """One line per message, as a person would read them on a phone."""
    lines: list[str] = []
    for message in messages:
        line = ""
        if "text" in message:
            line = str(message["text"])
        elif isinstance(message.get("attachment"), Mapping):
            line = _summarize_attachment(message["attachment"])
        replies = message.get("quick_replies")
        if isinstance(replies, list) and replies:
            line += " [" + " | ".join(str(reply.get("title")) for reply in replies) + "]"
        lines.append(line)
    return "\n".join(lines)


def _summarize_attachment(attachment: Mapping[str, Any]) -> str:
    kind = attachment.get("type")
    payload = attachment.get("payload") or {}
    if kind != "template":
        return f"[{kind} {payload.get('url')}]"
    template = payload.get("template_type")
    if template == "button":
        titles = " | ".join(str(button.get("title")) for button in payload.get("buttons") or [])
        return f"{payload.get('text')} [{titles}]"
    if template == "generic":
        titles = ", ".join(str(element.get("title")) for element in payload.get("elements") or [])
        return f"[gallery: {titles}]"
    total = (payload.get("summary") or {}).get("total_cost")
    return f"[receipt {payload.get('order_number')}: {total} {payload.get('currency')}]"


# --------------------------------------------------------------------------- outbox and request log


@dataclass(slots=True)
class OutboxEntry:
    """
    What the bot delivered to one user in one go.

    :param seq: the entry's number, from 1, in delivery order.
    :param time: when it was delivered.
    :param bot_id: the bot that sent it.
    :param messenger_user_id: the user who received it.
    :param kind: ``broadcast``, ``text``, ``dynamic``, or ``block`` (a block the user started by
        tapping a button, through ``PATCH /_sandbox/users/<id>``).
    :param messages: the messages, with placeholders replaced.
    :param block_name: the block broadcast or started, if any.
    :param message_tag: the broadcast's message tag, if any.
    :param blocks: every block that ran, including redirects.
    :param attributes: attributes saved on the user by this request (a broadcast's query attributes
        and the ``set_attributes`` of the message and its blocks).
    :param unresolved: placeholders that named no attribute or profile field.
    """

    seq: int
    time: datetime
    bot_id: str
    messenger_user_id: str
    kind: str
    messages: list[dict[str, Any]]
    block_name: str | None = None
    message_tag: str | None = None
    blocks: list[str] = field(default_factory=list)
    attributes: dict[str, Any] = field(default_factory=dict)
    unresolved: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The entry as ``GET /_sandbox/outbox`` answers with it; ``text`` is a readable summary."""
        return {
            "seq": self.seq,
            "time": isoformat(self.time),
            "bot_id": self.bot_id,
            "messenger_user_id": self.messenger_user_id,
            "kind": self.kind,
            "block_name": self.block_name,
            "message_tag": self.message_tag,
            "blocks": list(self.blocks),
            "messages": self.messages,
            "text": summarize(self.messages),
            "attributes": dict(self.attributes),
            "unresolved": list(self.unresolved),
        }


@dataclass(frozen=True)
class OutboxQuery:
    """
    Which outbox entries to read, as ``GET /_sandbox/outbox`` takes them: those after ``since``, of
    one user or bot if given, the last ``limit`` of them, oldest first.

    :param user_id: only this user's entries.
    :param bot_id: only this bot's entries.
    :param since: only entries whose ``seq`` is greater.
    :param limit: only the last this many; None for all.
    """

    user_id: str | None = None
    bot_id: str | None = None
    since: int = 0
    limit: int | None = None

    def matches(self, entry: OutboxEntry) -> bool:
        """Whether ``entry`` is one of those asked for (``limit`` aside)."""
        return (
            entry.seq > self.since
            and (self.user_id is None or entry.messenger_user_id == self.user_id)
            and (self.bot_id is None or entry.bot_id == self.bot_id)
        )

    def select(self, entries: Iterable[OutboxEntry]) -> list[OutboxEntry]:
        """The entries asked for, of ``entries`` in delivery order."""
        chosen = [entry for entry in entries if self.matches(entry)]
        if self.limit is not None:
            chosen = chosen[-self.limit :] if self.limit else []
        return chosen

    def params(self) -> dict[str, Any]:
        """The query string that asks for them; None leaves a name out."""
        return {**asdict(self), "since": self.since or None}


@dataclass(slots=True)
class RequestRecord:
    """
    One API request as received; query and body are decoded only when shown.

    :param seq: the request's number, from 1.
    :param time: when it arrived.
    :param method: the HTTP method.
    :param path: the path, without the query.
    :param query: the raw query string.
    :param body: the raw body.
    :param status: the status answered (0 while in progress).
    :param duration_ms: the time to answer, including injected latency.
    :param note: ``rate_limited``, ``injected`` or ``injected_after_processing`` when the sandbox
        answered in place of the API.
    """

    seq: int
    time: datetime
    method: str
    path: str
    query: bytes
    body: bytes
    status: int = 0
    duration_ms: float = 0.0
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The request with the token redacted, as ``GET /_sandbox/requests`` shows it."""
        query: dict[str, Any] = {}
        for name, value in parse_qsl(self.query.decode("latin-1"), keep_blank_values=True):
            shown = REDACTED if name == "ahachat_token" else value
            if name in query:
                previous = query[name]
                query[name] = [*previous, shown] if isinstance(previous, list) else [previous, shown]
            else:
                query[name] = shown
        return {
            "seq": self.seq,
            "time": isoformat(self.time),
            "method": self.method,
            "path": self.path,
            "query": query,
            "body": _show_body(self.body),
            "status": self.status,
            "duration_ms": round(self.duration_ms, 3),
            "note": self.note,
        }


def _show_body(body: bytes) -> Any:
    if not body:
        return None
    text = body.decode("utf-8", errors="replace")
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        return text[:10_000]
    if isinstance(parsed, dict) and "ahachat_token" in parsed:
        parsed["ahachat_token"] = REDACTED
    return parsed
