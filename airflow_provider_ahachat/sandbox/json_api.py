"""
The sandbox's "JSON API" steps: a block that calls a URL when a customer reaches it.

As in AhaChat, a step has a URL, a method, headers and a body whose values are templates on the
customer's attributes and profile (``{"order_code": "{{order_code}}"}``). When a customer reaches
the block (``PATCH /_sandbox/users/<id>`` with ``run_block``, or a redirect to it), the block's
messages are delivered, then each of its steps calls its URL; the answer, in AhaChat's JSON API
format (``{"messages": [...], "set_attributes": {...}, "redirect_to_blocks": [...]}``, or ``{}``),
is shown to the customer: it goes to the outbox with kind ``json_api``. The answer is read with the
keys of the knob ``answer_keys`` (those AhaChat reads; Chatfuel's by default): under any other key,
a part is ignored, as AhaChat would ignore it. Every call is kept in a
log (``GET /_sandbox/json_api/calls``) without its headers, since they carry secrets.
"""

from __future__ import annotations

import json
import re
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from airflow_provider_ahachat.exceptions import AhaChatValidationError
from airflow_provider_ahachat.held.answer import ANSWER_KEYS
from airflow_provider_ahachat.models import DynamicMessage
from airflow_provider_ahachat.sandbox.outbox import OutboxEntry, render
from airflow_provider_ahachat.sandbox.world import ApiError, Bot, SandboxUser, isoformat, utcnow

#: What shows an answer to the customer (the sandbox's ``SandboxState.deliver``): the bot, the
#: customer, the outbox entry's kind, its messages, the blocks to run and the attributes saved.
Deliver = Callable[[Bot, SandboxUser, str, list[dict[str, Any]], list[str], dict[str, Any]], OutboxEntry]

#: The methods a JSON API step may use, as in AhaChat.
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
#: How the body is sent.
FORMATS = ("json", "form")
#: The most calls the log keeps.
CALL_LOG_LIMIT = 1000
#: Seconds a step waits for its answer unless it says otherwise (AhaChat expects a quick one).
DEFAULT_TIMEOUT = 10.0
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}")


@dataclass(frozen=True)
class JsonApiStep:
    """
    One JSON API step of a block.

    :param url: where to call; ``http`` or ``https``; may hold ``{{placeholders}}``.
    :param method: ``GET``, ``POST``, ``PUT``, ``PATCH`` or ``DELETE``.
    :param headers: header name to value (templates allowed).
    :param body: field name to value (templates allowed); sent as the query string for ``GET``.
    :param format: ``json`` (a JSON object) or ``form`` (``application/x-www-form-urlencoded``).
    :param timeout: seconds to wait for the answer.
    """

    url: str
    method: str = "POST"
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Mapping[str, Any] = field(default_factory=dict)
    format: str = "json"
    timeout: float = DEFAULT_TIMEOUT

    @classmethod
    def parse(cls, raw: Any, where: str = "step") -> JsonApiStep:
        """A step from its JSON form; :class:`ApiError` 400 naming the field and the rule."""
        if not isinstance(raw, Mapping):
            raise ApiError(400, f"{where}: must be an object with url, method, headers, body")
        unknown = sorted(set(raw) - {"url", "method", "headers", "body", "format", "timeout"})
        if unknown:
            raise ApiError(400, f"{where}: unknown field(s) {', '.join(unknown)}")
        url = raw.get("url")
        if not isinstance(url, str) or not re.match(r"https?://[^/\s]+", url):
            raise ApiError(400, f"{where}.url: must be an http:// or https:// URL")
        method = str(raw.get("method") or "POST").upper()
        if method not in METHODS:
            raise ApiError(400, f"{where}.method: must be one of {', '.join(METHODS)}")
        headers = raw.get("headers") or {}
        if not isinstance(headers, Mapping) or not all(
            isinstance(k, str) and _HEADER_NAME.fullmatch(k) and isinstance(v, str)
            for k, v in headers.items()
        ):
            raise ApiError(400, f"{where}.headers: must be an object of header name to text")
        body = raw.get("body") or {}
        if not isinstance(body, Mapping):
            raise ApiError(400, f"{where}.body: must be an object of field name to value")
        body_format = str(raw.get("format") or "json")
        if body_format not in FORMATS:
            raise ApiError(400, f"{where}.format: must be json or form")
        timeout = raw.get("timeout", DEFAULT_TIMEOUT)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 120:
            raise ApiError(400, f"{where}.timeout: must be a number of seconds, more than 0 and at most 120")
        return cls(url, method, dict(headers), dict(body), body_format, float(timeout))

    def to_json(self, *, hide_headers: bool = True) -> dict[str, Any]:
        """The step as the control API shows it; header values hidden (they carry secrets)."""
        headers = dict.fromkeys(self.headers, "***") if hide_headers else dict(self.headers)
        return {
            "url": self.url,
            "method": self.method,
            "headers": headers,
            "body": dict(self.body),
            "format": self.format,
            "timeout": self.timeout,
        }


@dataclass
class JsonApiCall:
    """One call a step made, for ``GET /_sandbox/json_api/calls``."""

    seq: int
    time: str | None
    bot_id: str
    messenger_user_id: str
    block_name: str
    method: str
    url: str
    body: Any
    status: int | None = None
    answer: Any = None
    error: str | None = None
    duration_ms: float = 0.0
    outbox_seq: int | None = None
    unresolved: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class JsonApiSteps:
    """
    The JSON API steps of every bot's blocks, and the log of their calls.

    Kept on :class:`SandboxState` (``state.json_api``) and emptied by its ``reset()``.

    :param keys: the keys answers are read with now (the knob ``answer_keys``), by canonical name.
    """

    def __init__(self, keys: Callable[[], Mapping[str, str]] = lambda: ANSWER_KEYS) -> None:
        self.keys = keys
        self.steps: dict[tuple[str, str], list[JsonApiStep]] = {}
        self.calls: deque[JsonApiCall] = deque(maxlen=CALL_LOG_LIMIT)
        self.seq = 0

    def clear(self) -> None:
        self.steps.clear()
        self.calls.clear()

    def set(self, bot: Bot, block_name: str, raw_steps: Any) -> list[JsonApiStep]:
        """
        Give ``block_name`` these steps (an empty list removes them). A block that does not exist
        yet is created with no messages, as a block holding only a JSON API step is in AhaChat.
        """
        if isinstance(raw_steps, Mapping):
            raw_steps = [raw_steps]
        if not isinstance(raw_steps, list):
            raise ApiError(400, "steps: must be a list of steps (url, method, headers, body)")
        steps = [JsonApiStep.parse(raw, f"steps[{i}]") for i, raw in enumerate(raw_steps)]
        if not steps:
            self.steps.pop((bot.id, block_name), None)
            return []
        bot.blocks.setdefault(block_name, {"messages": []})
        self.steps[bot.id, block_name] = steps
        return steps

    def of(self, bot: Bot) -> dict[str, list[dict[str, Any]]]:
        """Block name to its steps (header values hidden), for one bot."""
        return {
            block: [s.to_json() for s in steps]
            for (bot_id, block), steps in self.steps.items()
            if bot_id == bot.id
        }

    async def run(
        self, deliver: Deliver, bot: Bot, user: SandboxUser, blocks: list[str]
    ) -> list[OutboxEntry]:
        """
        Run the steps of ``blocks`` (the blocks that just ran for ``user``), in order; ``deliver``
        shows their answers to the customer.
        """
        entries: list[OutboxEntry] = []
        for block_name in blocks:
            for step in self.steps.get((bot.id, block_name), []):
                entry = await self._call(deliver, bot, user, block_name, step)
                if entry is not None:
                    entries.append(entry)
        return entries

    async def _call(
        self, deliver: Deliver, bot: Bot, user: SandboxUser, block_name: str, step: JsonApiStep
    ) -> OutboxEntry | None:
        unresolved: list[str] = []
        context = user.context()
        url = render(step.url, context, unresolved)
        headers = render(dict(step.headers), context, unresolved)
        body = render(dict(step.body), context, unresolved)
        self.seq += 1
        call = JsonApiCall(
            self.seq, isoformat(utcnow()), bot.id, user.messenger_user_id, block_name, step.method, url, body
        )
        call.unresolved = unresolved
        self.calls.append(call)
        request: dict[str, Any] = {"headers": headers}
        if step.method == "GET":
            # Added to the URL's own query: httpx's ``params=`` would replace it.
            url = str(httpx.URL(url).copy_merge_params({k: _text(v) for k, v in body.items()}))
        elif step.format == "form":
            request["data"] = {k: _text(v) for k, v in body.items()}
        else:
            request["json"] = body
        began = time.monotonic()
        try:
            async with httpx.AsyncClient(timeout=step.timeout) as client:
                answer = await client.request(step.method, url, **request)
        except httpx.HTTPError as err:
            call.error = f"{type(err).__name__}: {err}"
            return None
        finally:
            call.duration_ms = round((time.monotonic() - began) * 1000, 1)
        call.status = answer.status_code
        try:
            payload = answer.json() if answer.content.strip() else {}
        except ValueError:
            payload = None
        call.answer = payload if payload is not None else answer.text[:2000]
        if not answer.is_success:
            call.error = f"the URL answered {answer.status_code}"
            return None
        if not isinstance(payload, Mapping):
            call.error = "the answer is not a JSON object"
            return None
        entry = self._show(deliver, bot, user, payload, call)
        if entry is not None:
            entry.block_name = block_name
            call.outbox_seq = entry.seq
        return entry

    def _show(
        self, deliver: Deliver, bot: Bot, user: SandboxUser, payload: Mapping[str, Any], call: JsonApiCall
    ) -> OutboxEntry | None:
        """Show the answer to the customer as AhaChat would: its messages, attributes and redirects."""
        keys = self.keys()
        payload = {name: payload[key] for name, key in keys.items() if key in payload}
        if not payload.get("messages") and not payload.get("redirect_to_blocks"):
            saved = payload.get("set_attributes")
            if isinstance(saved, Mapping) and saved:
                user.attributes.update({str(k): v for k, v in saved.items()})
            return None
        try:
            message = DynamicMessage.parse(dict(payload), "answer")
        except AhaChatValidationError as err:
            call.error = f"the answer is not a dynamic message: {err}"
            return None
        redirects = [name for name in message.redirect_to_blocks or () if name in bot.blocks]
        saved = dict(message.set_attributes or {})
        user.attributes.update(saved)
        messages = [dict(m) for m in json.loads(json.dumps(message.to_payload().get("messages") or []))]
        return deliver(bot, user, "json_api", messages, redirects, saved)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
