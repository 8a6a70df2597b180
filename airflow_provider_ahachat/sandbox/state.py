"""
The sandbox's in-memory AhaChat: bots, blocks, users, the outbox, the request log and the knobs.

Nothing here knows about HTTP. Every operation either succeeds or raises :class:`ApiError`
carrying the status and message the API answers with, and a failed operation changes nothing.
Input rules are the provider's own (:mod:`airflow_provider_ahachat.models`), so the sandbox
refuses exactly what the provider refuses.

Seed format
-----------

A seed is a JSON object with a list of bots; the first bot is the default one::

    {
      "bots": [
        {
          "id": "12404829",                      // digits, always a string
          "name": "Shop Thời Trang Lan Anh",
          "token": "<64 hex characters>",        // unique across bots
          "blocks": {                            // block name -> AhaChat's dynamic message format
            "shipping_update": {
              "messages": [{"text": "Đơn hàng {{order_id}} ... mã vận đơn {{tracking_number}}"}],
              "set_attributes": {"shipping_notified": "yes"},    // optional
              "redirect_to_blocks": ["confirm_delivery"]         // optional
            }
          },
          "users": [
            {
              "messenger_user_id": "3824547807572463",           // digits, always a string
              "first_name": "Lan", "last_name": "Nguyễn Thị",
              "gender": "female", "locale": "vi_VN", "profile_pic_url": null,
              "phone": "+84908071111", "email": null,
              "tags": ["vip"], "attributes": {"city": "Hà Nội"},
              "last_interaction_minutes_ago": 30,
              "subscribed": true
            }
          ]
        }
      ]
    }

- A user's last interaction is given relative to the moment the seed is loaded (or reset), as
  ``last_interaction_minutes_ago``, so that a seed stays valid forever; an absolute
  ``last_interaction_at`` (ISO 8601) is accepted too, and neither means the user never wrote.
- Blocks are checked with :meth:`DynamicMessage.parse <airflow_provider_ahachat.models.DynamicMessage.parse>`;
  every block named by ``redirect_to_blocks``, a ``show_block`` button or a quick reply must exist.
- Any string in a block may hold ``{{name}}`` placeholders. When the block runs, each is replaced
  by the user's attribute of that name, else by the user's profile field of that name
  (``messenger_user_id``, ``first_name``, ``last_name``, ``gender``, ``locale``, ``phone``,
  ``email``, ``profile_pic_url``; a missing field renders empty). A placeholder naming neither is
  left as written and listed in the outbox entry's ``unresolved``.
"""

from __future__ import annotations

import json
import math
import random
import re
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from pydantic import ConfigDict

from airflow_provider_ahachat.exceptions import AhaChatValidationError
from airflow_provider_ahachat.models import (
    DynamicMessage,
    MessageTag,
    User,
    attribute_query_value,
    normalize_phone,
    validate_attribute_names,
    validate_attributes,
    validate_block_name,
    validate_tags,
    validate_user_id,
)
from airflow_provider_ahachat.sandbox.messenger import (
    MESSAGING_WINDOW,
    MESSENGER_RULES,
    RULES_2026,
    Refusal,
    refusal,
)

#: The seed that ships with the package.
DEFAULT_SEED_PATH = Path(__file__).with_name("seed.json")


#: Entries kept in the outbox and in the request log; the oldest are dropped first.
OUTBOX_LIMIT = 1_000_000
REQUEST_LOG_LIMIT = 10_000

#: How deep ``redirect_to_blocks`` may chain before the sandbox stops following.
MAX_REDIRECT_DEPTH = 10

REDACTED = "***"

_PLACEHOLDER = re.compile(r"\{\{\s*([^{}]+?)\s*\}\}")
#: The user's profile fields (strings or null), which placeholders and the control API may name.
_NOT_PROFILE = frozenset({"tags", "attributes", "last_interaction_at", "subscribed"})
_PROFILE_FIELDS = tuple(name for name in User.model_fields if name not in _NOT_PROFILE)
_BOT_ID = re.compile(r"[0-9]+")


class ApiError(Exception):
    """
    An error answer of the API.

    :param status: the HTTP status.
    :param message: the ``message`` of the answer.
    :param problems: for invalid input, one line per problem, each naming its field.
    :param headers: extra response headers, such as ``Retry-After``.
    :param meta: Meta's error object, when the answer passes on Messenger's refusal.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        problems: list[str] | None = None,
        headers: dict[str, str] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.problems = problems
        self.headers = headers or {}
        self.meta = meta

    @classmethod
    def invalid(cls, err: AhaChatValidationError) -> ApiError:
        """A 400 answer listing the problems of a failed input rule."""
        return cls(400, str(err), problems=list(err.problems))

    @classmethod
    def refused(cls, refused: Refusal) -> ApiError:
        """Messenger's refusal, passed on: Meta's text as the message, Meta's object as ``error``."""
        return cls(refused.status, refused.text, meta=refused.error)

    def to_json(self) -> dict[str, Any]:
        """The answer body."""
        body: dict[str, Any] = {"success": False, "message": self.message}
        if self.problems:
            body["problems"] = self.problems
        if self.meta is not None:
            body["error"] = self.meta
        return body


def checked(rule: Callable[..., Any], *args: Any) -> Any:
    """``rule(*args)``, with a failed input rule turned into a 400 answer listing its problems."""
    try:
        return rule(*args)
    except AhaChatValidationError as err:
        raise ApiError.invalid(err) from None


class SeedError(ValueError):
    """The seed is not valid; the text names the faulty field."""


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(timezone.utc)


def isoformat(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC with a ``Z``, to the millisecond."""
    if moment is None:
        return None
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def phone_key(value: Any, field: str = "phone") -> str:
    """
    The form under which a phone number is indexed and looked up.

    The number is normalised with :func:`~airflow_provider_ahachat.models.normalize_phone`, then a
    Vietnamese number in national form (leading ``0``) or without its ``+`` (``84`` and 9 digits, as
    left when a literal ``+`` in a query string was read as a space) becomes ``+84...``.
    """
    text = normalize_phone(value, field)
    if text.startswith("0"):
        return "+84" + text[1:]
    if len(text) == 11 and text.startswith("84"):
        return "+" + text
    return text


# --------------------------------------------------------------------------- users, bots


def synthetic_user_id(number: int) -> str:
    """The ID of generated customer ``number``: 16 digits starting with 9."""
    return f"9{number:015d}"


def synthetic_phone(number: int) -> str:
    """The phone of generated customer ``number``: ``+849`` and 8 digits (numbers past 10**8 wrap)."""
    return f"+849{number % 10**8:08d}"


class SandboxUser(User):
    """
    One customer of a bot: the provider's :class:`~airflow_provider_ahachat.models.User`, with what
    the sandbox does to it. A missing field keeps :class:`User`'s default; ``last_interaction_at``
    ``None`` means the user never wrote, and a user with ``subscribed`` False gets nothing.
    """

    model_config = ConfigDict(extra="forbid")

    def add_tags(self, tags: Iterable[str]) -> None:
        """Add tags the user does not have yet, keeping their order."""
        for tag in tags:
            if tag not in self.tags:
                self.tags.append(tag)

    def remove_tags(self, tags: Iterable[str]) -> None:
        """Remove tags; tags the user does not have are ignored."""
        gone = set(tags)
        self.tags[:] = [tag for tag in self.tags if tag not in gone]

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        """Set attributes, replacing their old values."""
        self.attributes.update(attributes)

    def reset_attributes(self, names: Iterable[str]) -> None:
        """Clear attributes; names the user does not have are ignored."""
        for name in names:
            self.attributes.pop(name, None)

    def to_json(self) -> dict[str, Any]:
        """The user as the API answers with it."""
        values: dict[str, Any] = dict(self.__dict__)  # the model's fields, in its order
        values["tags"] = list(self.tags)
        values["attributes"] = dict(self.attributes)
        values["last_interaction_at"] = isoformat(self.last_interaction_at)
        return values

    def within_window(self, now: datetime) -> bool:
        """Whether the user wrote to the bot in the last 24 hours."""
        return self.last_interaction_at is not None and now - self.last_interaction_at <= MESSAGING_WINDOW

    def refusal(self, tag: MessageTag | None, rules: str) -> Refusal | None:
        """Why Messenger refuses a message with ``tag`` to this user now, under ``rules``; None if not."""
        return refusal(
            last_interaction_at=self.last_interaction_at,
            subscribed=self.subscribed,
            tag=tag,
            now=utcnow(),
            rules=rules,
        )

    def context(self) -> dict[str, Any]:
        """The values placeholders may name: profile fields, overlaid by attributes."""
        values: dict[str, Any] = {name: getattr(self, name) for name in _PROFILE_FIELDS}
        values.update(self.attributes)
        return values


@dataclass(slots=True)
class Bot:
    """
    One AhaChat bot.

    :param id: the bot ID, a string of digits.
    :param name: the bot's name.
    :param token: the bot's API token.
    :param blocks: block name to dynamic message (``messages``, ``set_attributes``, ``redirect_to_blocks``).
    :param users: users by ``messenger_user_id``.
    :param phones: user IDs by :func:`phone_key`.
    """

    id: str
    name: str
    token: str
    blocks: dict[str, dict[str, Any]] = field(default_factory=dict)
    users: dict[str, SandboxUser] = field(default_factory=dict)
    phones: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The bot as ``GET /api/bots/<id>`` answers with it (never the token)."""
        return {"id": self.id, "name": self.name}

    def add_user(self, user: SandboxUser) -> None:
        """Add a user and index their phone."""
        self.users[user.messenger_user_id] = user
        if user.phone:
            self.phones.setdefault(phone_key(user.phone), user.messenger_user_id)

    def reindex_phones(self) -> None:
        """Rebuild the phone index after a phone changed."""
        self.phones = {}
        for user in self.users.values():
            if user.phone:
                self.phones.setdefault(phone_key(user.phone), user.messenger_user_id)


# --------------------------------------------------------------------------- seed


def read_seed(path: str | Path | None = None) -> dict[str, Any]:
    """Read a seed file (the packaged one by default) and check it; raise :class:`SeedError` if bad."""
    seed_path = Path(path) if path is not None else DEFAULT_SEED_PATH
    try:
        raw = json.loads(seed_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise SeedError(f"{seed_path}: cannot read the seed ({err})") from None
    build_bots(raw)
    return dict(raw)


def build_bots(seed: Any, now: datetime | None = None) -> dict[str, Bot]:
    """Build the bots of a seed, by ID, in the seed's order; raise :class:`SeedError` if bad."""
    now = now or utcnow()
    if not isinstance(seed, Mapping) or not isinstance(seed.get("bots"), list) or not seed["bots"]:
        raise SeedError("seed: must be an object with a non-empty list 'bots'")
    bots: dict[str, Bot] = {}
    tokens: set[str] = set()
    for index, raw in enumerate(seed["bots"]):
        where = f"bots[{index}]"
        if not isinstance(raw, Mapping):
            raise SeedError(f"{where}: must be an object")
        bot_id = raw.get("id")
        if not isinstance(bot_id, str) or not _BOT_ID.fullmatch(bot_id):
            raise SeedError(f"{where}.id: must be a string of digits, got {bot_id!r}")
        if bot_id in bots:
            raise SeedError(f"{where}.id: bot {bot_id} appears twice")
        token = raw.get("token")
        if not isinstance(token, str) or not token.strip():
            raise SeedError(f"{where}.token: must be a non-empty string")
        if token in tokens:
            raise SeedError(f"{where}.token: another bot has the same token")
        tokens.add(token)
        bot = Bot(id=bot_id, name=str(raw.get("name") or f"Bot {bot_id}"), token=token)
        bot.blocks = _build_blocks(raw.get("blocks") or {}, f"{where}.blocks")
        users = raw.get("users") or []
        if not isinstance(users, list):
            raise SeedError(f"{where}.users: must be a list")
        for user_index, user_raw in enumerate(users):
            user = build_user(user_raw, now, f"{where}.users[{user_index}]")
            if user.messenger_user_id in bot.users:
                raise SeedError(f"{where}.users[{user_index}]: user {user.messenger_user_id} appears twice")
            bot.add_user(user)
        bots[bot_id] = bot
    return bots


def _build_blocks(raw: Any, where: str) -> dict[str, dict[str, Any]]:
    if not isinstance(raw, Mapping):
        raise SeedError(f"{where}: must be an object of block name to dynamic message")
    blocks: dict[str, dict[str, Any]] = {}
    for name, body in raw.items():
        try:
            validate_block_name(name, f"{where} name")
            message = DynamicMessage.parse(body, f"{where}.{name}")
        except AhaChatValidationError as err:
            raise SeedError(f"{where}.{name}: {err}") from None
        blocks[name] = message.to_payload()
    for name, body in blocks.items():
        for target in _block_references(body):
            if target not in blocks:
                raise SeedError(f"{where}.{name}: refers to block {target!r}, which does not exist")
    return blocks


def _block_references(body: Mapping[str, Any]) -> Iterator[str]:
    yield from body.get("redirect_to_blocks") or ()

    def walk(node: Any) -> Iterator[str]:
        if isinstance(node, Mapping):
            name = node.get("block_name")
            if isinstance(name, str):
                yield name
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)

    yield from walk(body.get("messages"))


_USER_FIELDS = frozenset(
    {
        *_PROFILE_FIELDS,
        "tags",
        "attributes",
        "last_interaction_at",
        "last_interaction_minutes_ago",
        "subscribed",
    }
)


def build_user(raw: Any, now: datetime, where: str = "user") -> SandboxUser:
    """Build a user from its seed form; raise :class:`SeedError` naming the field if bad."""
    if not isinstance(raw, Mapping):
        raise SeedError(f"{where}: must be an object")
    unknown = sorted(set(raw) - _USER_FIELDS)
    if unknown:
        raise SeedError(f"{where}: unknown field(s) {', '.join(unknown)}")
    try:
        user_id = validate_user_id(raw.get("messenger_user_id"), f"{where}.messenger_user_id")
        phone = raw.get("phone")
        if phone is not None:
            phone_key(phone, f"{where}.phone")
        tags = validate_tags(raw["tags"], f"{where}.tags") if raw.get("tags") else []
        attributes = validate_attributes(raw.get("attributes"), f"{where}.attributes", allow_empty=True)
    except AhaChatValidationError as err:
        raise SeedError(str(err)) from None
    strings = {}
    for name in _PROFILE_FIELDS:
        if name in ("messenger_user_id", "phone"):
            continue
        value = raw.get(name)
        if value is not None and not isinstance(value, str):
            raise SeedError(f"{where}.{name}: must be a string or null")
        strings[name] = value
    subscribed = raw.get("subscribed", True)
    if not isinstance(subscribed, bool):
        raise SeedError(f"{where}.subscribed: must be true or false")
    return SandboxUser(
        messenger_user_id=user_id,
        phone=phone if phone is None else str(phone),
        tags=tags,
        attributes=attributes,
        last_interaction_at=_last_interaction(raw, now, where),
        subscribed=subscribed,
        **strings,
    )


def _last_interaction(raw: Mapping[str, Any], now: datetime, where: str) -> datetime | None:
    minutes = raw.get("last_interaction_minutes_ago")
    absolute = raw.get("last_interaction_at")
    if minutes is not None and absolute is not None:
        raise SeedError(f"{where}: give last_interaction_minutes_ago or last_interaction_at, not both")
    if minutes is not None:
        if isinstance(minutes, bool) or not isinstance(minutes, int | float) or not math.isfinite(minutes):
            raise SeedError(f"{where}.last_interaction_minutes_ago: must be a number")
        return now - timedelta(minutes=minutes)
    if absolute is not None:
        return parse_time(absolute, f"{where}.last_interaction_at")
    return None


def parse_time(value: Any, where: str) -> datetime:
    """Parse an ISO 8601 time; a time without a zone is taken as UTC."""
    if not isinstance(value, str):
        raise SeedError(f"{where}: must be an ISO 8601 time, got {value!r}")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise SeedError(f"{where}: must be an ISO 8601 time, got {value!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


# --------------------------------------------------------------------------- rendering


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


# --------------------------------------------------------------------------- knobs


@dataclass(slots=True)
class Fault:
    """
    One injected error answer.

    :param status: the HTTP status to answer with.
    :param deliver: whether the request is processed before the error is answered (``None``: as
        the config's ``deliver_before_fail`` says).
    """

    status: int
    deliver: bool | None = None

    def to_json(self) -> dict[str, Any]:
        """The fault as the config shows it."""
        return {"status": self.status, "deliver": self.deliver}


@dataclass(slots=True)
class SandboxConfig:
    """
    The knobs of the sandbox, changed at run time through ``POST /_sandbox/config``.

    :param latency_ms: added to every API request, without blocking the server.
    :param rate_limit: API requests per second before 429 answers (a token bucket holding one
        second's worth); 0 turns the limit off.
    :param retry_after: the least ``Retry-After`` of a 429, in whole seconds (0 lets tests go fast).
    :param error_rate: the fraction of API requests answered with ``error_status`` at random.
    :param error_status: the status of random injected errors, or a list to pick from at random.
    :param deliver_before_fail: whether a request answered with an injected error was processed
        first (the message was delivered, the tag added) or not at all.
    :param fail_next: the next API requests to fail, in order, one status each.
    :param messenger_rules: Messenger's rules the sandbox enforces: ``"2026"``, Meta's as of
        December 2026, or ``"2025"``, those before 27 April 2026 (see :mod:`.messenger`).
    """

    latency_ms: float = 0.0
    rate_limit: float = 0.0
    retry_after: int = 1
    error_rate: float = 0.0
    error_status: int | list[int] = 503
    deliver_before_fail: bool = False
    fail_next: list[Fault] = field(default_factory=list)
    messenger_rules: str = RULES_2026

    def to_json(self) -> dict[str, Any]:
        """The knobs as ``GET /_sandbox/config`` answers with them."""
        knobs = {knob.name: getattr(self, knob.name) for knob in fields(self)}
        return knobs | {"fail_next": [fault.to_json() for fault in self.fail_next]}

    def copy(self) -> SandboxConfig:
        """An independent copy."""
        return replace(self, fail_next=[replace(fault) for fault in self.fail_next])

    def updated(self, changes: Any) -> SandboxConfig:
        """A copy with ``changes`` applied; raise a 400 :class:`ApiError` naming a bad knob."""
        if not isinstance(changes, Mapping):
            raise ApiError(400, "body: must be a JSON object of knobs")
        new = self.copy()
        for name, value in changes.items():
            read = _KNOBS.get(name)
            if read is None:
                knobs = ", ".join(self.to_json())
                raise ApiError(400, f"{name}: unknown knob; expected one of {knobs}")
            setattr(new, name, read(value, name))
        return new


def _error_status(value: Any, name: str) -> int | list[int]:
    if isinstance(value, list) and value:
        return [_status(item, f"{name}[{i}]") for i, item in enumerate(value)]
    return _status(value, name)


def _true_or_false(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ApiError(400, f"{name}: must be true or false, got {value!r}")
    return value


def _messenger_rules(value: Any, name: str) -> str:
    if value not in MESSENGER_RULES:
        rules = " or ".join(f'"{rule}"' for rule in MESSENGER_RULES)
        raise ApiError(400, f"{name}: must be {rules}, got {value!r}")
    return str(value)


#: How each knob of :class:`SandboxConfig` is read from the control API, checked.
_KNOBS: dict[str, Callable[[Any, str], Any]] = {
    "latency_ms": lambda value, name: _number(value, name, 0, 600_000),
    "rate_limit": lambda value, name: _number(value, name, 0, 1_000_000),
    "retry_after": lambda value, name: int(_number(value, name, 0, 86_400, integer=True)),
    "error_rate": lambda value, name: _number(value, name, 0, 1),
    "error_status": _error_status,
    "deliver_before_fail": _true_or_false,
    "fail_next": lambda value, name: _faults(value),
    "messenger_rules": _messenger_rules,
}


def _number(value: Any, name: str, least: float, most: float, *, integer: bool = False) -> float:
    valid = not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
    if integer and valid:
        valid = float(value).is_integer()
    if not valid or not least <= value <= most:
        kind = "an integer" if integer else "a number"
        raise ApiError(400, f"{name}: must be {kind} from {least:g} to {most:g}, got {value!r}")
    return float(value)


def _status(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 400 <= value <= 599:
        raise ApiError(400, f"{name}: must be an HTTP error status from 400 to 599, got {value!r}")
    return value


def _faults(value: Any) -> list[Fault]:
    if not isinstance(value, list):
        raise ApiError(400, f"fail_next: must be a list of statuses, got {value!r}")
    faults: list[Fault] = []
    for index, item in enumerate(value):
        where = f"fail_next[{index}]"
        if isinstance(item, Mapping):
            unknown = set(item) - {"status", "deliver"}
            if unknown:
                raise ApiError(400, f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
            deliver = item.get("deliver")
            if deliver is not None and not isinstance(deliver, bool):
                raise ApiError(400, f"{where}.deliver: must be true, false or null")
            faults.append(Fault(_status(item.get("status"), f"{where}.status"), deliver))
        else:
            faults.append(Fault(_status(item, where)))
    return faults


class TokenBucket:
    """
    A global rate limit: ``rate`` requests per second, with a burst of one second's worth.

    :param rate: requests per second; more than 0.
    """

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.stamp = time.monotonic()

    def take(self) -> float:
        """Take a token; return 0 if one was free, else the seconds until one will be."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


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


# --------------------------------------------------------------------------- the whole state


class SandboxState:
    """
    Everything the sandbox holds. Used from the server's event loop only.

    :param seed: the seed, as :func:`read_seed` returns it (the packaged seed by default).
    :param config: the knobs to start with, and to return to on :meth:`reset`.
    """

    def __init__(self, seed: Mapping[str, Any] | None = None, config: SandboxConfig | None = None) -> None:
        self.seed: dict[str, Any] = dict(seed) if seed is not None else read_seed()
        self.initial_config = config.copy() if config is not None else SandboxConfig()
        self.random = random.Random()
        self.bots: dict[str, Bot] = {}
        self.tokens: dict[str, str] = {}
        self.outbox: deque[OutboxEntry] = deque(maxlen=OUTBOX_LIMIT)
        self.requests: deque[RequestRecord] = deque(maxlen=REQUEST_LOG_LIMIT)
        self.counts: Counter[tuple[str, int]] = Counter()
        self.config = self.initial_config.copy()
        self.bucket: TokenBucket | None = None
        self.outbox_seq = 0
        self.request_seq = 0
        self.started_at = utcnow()
        from airflow_provider_ahachat.sandbox.json_api import JsonApiSteps

        #: The blocks' JSON API steps and the log of their calls (:mod:`.json_api`).
        self.json_api = JsonApiSteps()
        self.reset()

    # -- lifecycle and knobs

    def reset(self) -> None:
        """Back to the seed (times relative to now), the starting knobs, and empty logs."""
        self.bots = build_bots(self.seed)
        self.tokens = {bot.token: bot.id for bot in self.bots.values()}
        self.outbox.clear()
        self.requests.clear()
        self.counts.clear()
        self.outbox_seq = 0
        self.request_seq = 0
        self.started_at = utcnow()
        self.bucket = None
        self.json_api.clear()
        self.set_config(self.initial_config.copy())

    def set_config(self, config: SandboxConfig) -> None:
        """Apply new knobs; a changed rate limit starts with a full bucket."""
        if self.bucket is None or config.rate_limit != self.config.rate_limit:
            self.bucket = TokenBucket(config.rate_limit) if config.rate_limit > 0 else None
        self.config = config

    @property
    def default_bot(self) -> Bot:
        """The first bot of the seed."""
        return next(iter(self.bots.values()))

    def rate_limited(self) -> int:
        """0 if the request may go on, else the ``Retry-After`` seconds of a 429."""
        if self.bucket is None:
            return 0
        wait = self.bucket.take()
        if wait <= 0:
            return 0
        return max(self.config.retry_after, math.ceil(wait))

    def next_fault(self) -> Fault | None:
        """The injected error for this request, if any: first the ``fail_next`` queue, then chance."""
        config = self.config
        if config.fail_next:
            return config.fail_next.pop(0)
        if config.error_rate > 0 and self.random.random() < config.error_rate:
            status = config.error_status
            return Fault(self.random.choice(status) if isinstance(status, list) else status)
        return None

    def fault_delivers(self, fault: Fault) -> bool:
        """Whether the request answered with ``fault`` is processed first."""
        return self.config.deliver_before_fail if fault.deliver is None else fault.deliver

    # -- request log and stats

    def log_request(self, method: str, path: str, query: bytes, body: bytes) -> RequestRecord:
        """Record an API request as it arrives."""
        self.request_seq += 1
        record = RequestRecord(self.request_seq, utcnow(), method, path, query, body)
        self.requests.append(record)
        return record

    def count(self, route: str, status: int) -> None:
        """Count an answered API request."""
        self.counts[(route, status)] += 1

    def stats(self) -> dict[str, Any]:
        """Answered API requests: in total, by status, and by route and status."""
        by_status: Counter[str] = Counter()
        by_route: dict[str, dict[str, int]] = {}
        for (route, status), number in sorted(self.counts.items()):
            by_status[str(status)] += number
            by_route.setdefault(route, {})[str(status)] = number
        return {
            "since": isoformat(self.started_at),
            "total": sum(by_status.values()),
            "by_status": dict(sorted(by_status.items())),
            "by_route": by_route,
            "outbox": len(self.outbox),
        }

    # -- lookups

    def bot(self, bot_id: str, token: str | None) -> Bot:
        """
        The bot a request may act on.

        401 if the token is missing or is no bot's token; 404 if there is no such bot; 403 if the
        token is another bot's.
        """
        if not token:
            raise ApiError(401, "missing ahachat_token")
        owner = self.tokens.get(token)
        if owner is None:
            raise ApiError(401, "invalid ahachat_token")
        bot = self.bots.get(bot_id)
        if bot is None:
            raise ApiError(404, f"bot {bot_id} not found")
        if owner != bot_id:
            raise ApiError(403, f"the token does not belong to bot {bot_id}")
        return bot

    def user(self, bot: Bot, user_id: str) -> SandboxUser:
        """The user of ``bot`` with this ID; 400 if not an ID, 404 if unknown."""
        key = checked(validate_user_id, user_id)
        user = bot.users.get(key)
        if user is None:
            raise ApiError(404, f"user {key} not found in bot {bot.id}")
        return user

    def user_by_phone(self, bot: Bot, phone: str | None) -> SandboxUser:
        """The user of ``bot`` with this phone number; 400 if missing or not a number, 404 if unknown."""
        if phone is None or phone == "":
            raise ApiError(400, "phone: required")
        key = checked(phone_key, phone)
        user_id = bot.phones.get(key)
        if user_id is None:
            raise ApiError(404, f"no user with phone {phone} in bot {bot.id}")
        return bot.users[user_id]

    def block(self, bot: Bot, name: Any, field: str = "ahachat_block_name") -> str:
        """The name of an existing block of ``bot``; 400 if missing, 404 if unknown."""
        block_name = checked(validate_block_name, name, field)
        if block_name not in bot.blocks:
            raise ApiError(404, f"block {block_name!r} not found in bot {bot.id}")
        return block_name

    def control_user(self, user_id: str, bot_id: str | None = None) -> tuple[Bot, SandboxUser]:
        """A user for the control API: in ``bot_id`` if given, else in the only bot that has them."""
        if bot_id is not None:
            bot = self.bots.get(bot_id)
            if bot is None:
                raise ApiError(404, f"bot {bot_id} not found")
            return bot, self.user(bot, user_id)
        found = [(bot, bot.users[user_id]) for bot in self.bots.values() if user_id in bot.users]
        if not found:
            raise ApiError(404, f"user {user_id} not found")
        if len(found) > 1:
            raise ApiError(400, f"user {user_id} is in several bots; give ?bot_id=")
        return found[0]

    # -- actions

    def messenger_check(self, user: SandboxUser, tag: MessageTag | None) -> None:
        """Messenger's rules: raise its refusal of a message with ``tag`` to ``user`` now, if any."""
        refused = user.refusal(tag, self.config.messenger_rules)
        if refused is not None:
            raise ApiError.refused(refused)

    def broadcast(
        self,
        bot: Bot,
        user: SandboxUser,
        *,
        tag: MessageTag | None,
        block_name: str,
        attributes: Mapping[str, Any],
    ) -> OutboxEntry:
        """
        Save ``attributes`` on the user, then run the block; Messenger's refusal (a retired tag, the
        user unavailable or outside the window for ``tag``) changes nothing.
        """
        self.messenger_check(user, tag)
        user.attributes.update(attributes)
        entry = self._deliver(bot, user, "broadcast", [], [block_name], dict(attributes))
        entry.block_name = block_name
        entry.message_tag = tag.value if tag is not None else None
        return entry

    def send_message(self, bot: Bot, user: SandboxUser, message: DynamicMessage) -> OutboxEntry:
        """Send a text or dynamic message (never tagged); Messenger refuses it outside the 24-hour window."""
        redirects = list(message.redirect_to_blocks or ())
        for name in redirects:
            self.block(bot, name, "redirect_to_blocks")
        self.messenger_check(user, None)
        is_text = (
            not message.set_attributes and not redirects and all(set(m) == {"text"} for m in message.messages)
        )
        saved = dict(message.set_attributes or {})
        user.attributes.update(saved)
        messages = [dict(m) for m in message.messages]
        return self._deliver(bot, user, "text" if is_text else "dynamic", messages, redirects, saved)

    def run_block(self, bot: Bot, user: SandboxUser, block_name: str) -> OutboxEntry:
        """The user tapped a button that starts ``block_name``: it runs, and counts as an interaction."""
        user.last_interaction_at = utcnow()
        entry = self._deliver(bot, user, "block", [], [block_name], {})
        entry.block_name = block_name
        return entry

    def _deliver(
        self,
        bot: Bot,
        user: SandboxUser,
        kind: str,
        messages: list[dict[str, Any]],
        blocks: list[str],
        attributes: dict[str, Any],
    ) -> OutboxEntry:
        unresolved: list[str] = []
        ran: list[str] = []
        pending = [(name, 0) for name in blocks]
        while pending:
            name, depth = pending.pop(0)
            if depth > MAX_REDIRECT_DEPTH:
                continue
            ran.append(name)
            block = bot.blocks[name]
            messages.extend(render(block.get("messages") or [], user.context(), unresolved))
            if block.get("set_attributes"):
                values = render(block["set_attributes"], user.context(), unresolved)
                user.attributes.update(values)
                attributes.update(values)
            pending[:0] = [(target, depth + 1) for target in block.get("redirect_to_blocks") or ()]
        self.outbox_seq += 1
        entry = OutboxEntry(
            seq=self.outbox_seq,
            time=utcnow(),
            bot_id=bot.id,
            messenger_user_id=user.messenger_user_id,
            kind=kind,
            messages=messages,
            blocks=ran,
            attributes=attributes,
            unresolved=unresolved,
        )
        self.outbox.append(entry)
        return entry

    def outbox_counts(self, *, bot_id: str | None = None) -> dict[str, int]:
        """How many outbox entries each user has, of one bot if given: to check nobody got two."""
        entries = OutboxQuery(bot_id=bot_id).select(self.outbox)
        return dict(Counter(entry.messenger_user_id for entry in entries))

    def generate_users(self, bot: Bot, changes: Any) -> dict[str, Any]:
        """
        Add ``count`` numbered customers for tests at scale; see ``POST /_sandbox/users/generate``.

        User number ``i`` has the ID :func:`synthetic_user_id` (i) and the phone
        :func:`synthetic_phone` (i); ``in_window`` says whether they wrote in the last 24 hours.
        """
        if not isinstance(changes, Mapping):
            raise ApiError(400, "body: must be a JSON object")
        unknown = set(changes) - {"count", "start", "in_window"}
        if unknown:
            raise ApiError(
                400, f"unknown field(s) {', '.join(sorted(unknown))}; expected count, start, in_window"
            )
        count = int(_number(changes.get("count"), "count", 0, 2_000_000, integer=True))
        start = int(_number(changes.get("start", 0), "start", 0, 10**14, integer=True))
        in_window = changes.get("in_window", True)
        if not isinstance(in_window, bool):
            raise ApiError(400, f"in_window: must be true or false, got {in_window!r}")
        taken = next((n for n in range(start, start + count) if synthetic_user_id(n) in bot.users), None)
        if taken is not None:
            raise ApiError(
                409, f"user {synthetic_user_id(taken)} already exists in bot {bot.id}; nothing added"
            )
        now = utcnow()
        last = now - timedelta(minutes=5) if in_window else now - timedelta(days=3)
        for number in range(start, start + count):
            bot.add_user(
                SandboxUser(
                    messenger_user_id=synthetic_user_id(number),
                    first_name=f"Khách {number}",
                    phone=synthetic_phone(number),
                    last_interaction_at=last,
                )
            )
        return {
            "added": count,
            "first": synthetic_user_id(start) if count else None,
            "last": synthetic_user_id(start + count - 1) if count else None,
        }

    def outbox_json(self, query: OutboxQuery) -> list[dict[str, Any]]:
        """The outbox entries ``query`` asks for, oldest first, as ``GET /_sandbox/outbox`` answers."""
        return [entry.to_json() for entry in query.select(self.outbox)]

    # -- control API

    def patch_user(self, bot: Bot, user: SandboxUser, changes: Any) -> OutboxEntry | None:
        """
        Change a user as if they acted; see ``PATCH /_sandbox/users/<id>`` in :mod:`.routes.control`.

        Everything is checked before anything changes.
        """
        if not isinstance(changes, Mapping):
            raise ApiError(400, "body: must be a JSON object")
        allowed = {
            "attributes",
            "reset_attributes",
            "add_tags",
            "remove_tags",
            "touch",
            "last_interaction_at",
            "last_interaction_minutes_ago",
            "subscribed",
            "run_block",
            *(name for name in _PROFILE_FIELDS if name != "messenger_user_id"),
        }
        unknown = sorted(set(changes) - allowed)
        if unknown:
            raise ApiError(
                400, f"body: unknown field(s) {', '.join(unknown)}; expected {', '.join(sorted(allowed))}"
            )
        try:
            attributes = (
                validate_attributes(changes["attributes"], "attributes", allow_empty=True)
                if "attributes" in changes
                else {}
            )
            reset = (
                validate_attribute_names(changes["reset_attributes"], "reset_attributes")
                if "reset_attributes" in changes
                else []
            )
            add_tags = validate_tags(changes["add_tags"], "add_tags") if "add_tags" in changes else []
            remove_tags = (
                validate_tags(changes["remove_tags"], "remove_tags") if "remove_tags" in changes else []
            )
            if changes.get("phone") is not None:
                phone_key(changes["phone"])
        except AhaChatValidationError as err:
            raise ApiError.invalid(err) from None
        try:
            moment = _last_interaction(changes, utcnow(), "body")
        except SeedError as err:
            raise ApiError(400, str(err)) from None
        for name in ("subscribed", "touch"):
            if name in changes and not isinstance(changes[name], bool):
                raise ApiError(400, f"{name}: must be true or false")
        for name in _PROFILE_FIELDS:
            value = changes.get(name)
            if value is not None and not isinstance(value, str):
                raise ApiError(400, f"{name}: must be a string or null")
        block_name = self.block(bot, changes["run_block"], "run_block") if changes.get("run_block") else None

        for name in _PROFILE_FIELDS:
            if name in changes and name != "messenger_user_id":
                setattr(user, name, changes[name])
        if "phone" in changes:
            bot.reindex_phones()
        user.reset_attributes(reset)
        user.set_attributes(attributes)
        user.add_tags(add_tags)
        user.remove_tags(remove_tags)
        if "subscribed" in changes:
            user.subscribed = changes["subscribed"]
        if "last_interaction_at" in changes or "last_interaction_minutes_ago" in changes:
            user.last_interaction_at = moment
        if changes.get("touch"):
            user.last_interaction_at = utcnow()
        if block_name is not None:
            return self.run_block(bot, user, block_name)
        return None

    def create_user(self, bot: Bot, raw: Any) -> SandboxUser:
        """Add a user from its seed form; 400 if bad, 409 if the ID is taken."""
        try:
            user = build_user(raw, utcnow(), "body")
        except SeedError as err:
            raise ApiError(400, str(err)) from None
        if user.messenger_user_id in bot.users:
            raise ApiError(409, f"user {user.messenger_user_id} already exists in bot {bot.id}")
        bot.add_user(user)
        return user
