"""
The sandbox's seed: the bots, blocks and customers it starts from (and returns to on reset).

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
import re
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from airflow_provider_ahachat.exceptions import AhaChatValidationError
from airflow_provider_ahachat.models import (
    DynamicMessage,
    validate_attributes,
    validate_block_name,
    validate_tags,
    validate_user_id,
)
from airflow_provider_ahachat.sandbox.world import PROFILE_FIELDS, Bot, SandboxUser, phone_key, utcnow

#: The seed that ships with the package.
DEFAULT_SEED_PATH = Path(__file__).with_name("seed.json")

_BOT_ID = re.compile(r"[0-9]+")


class SeedError(ValueError):
    """The seed is not valid; the text names the faulty field."""


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
    for index, raw in enumerate(seed["bots"]):
        bot = _build_bot(raw, now, f"bots[{index}]", bots)
        bots[bot.id] = bot
    return bots


def _build_bot(raw: Any, now: datetime, where: str, before: Mapping[str, Bot]) -> Bot:
    """One bot of a seed, its ID and token unlike those of the bots ``before`` it."""
    if not isinstance(raw, Mapping):
        raise SeedError(f"{where}: must be an object")
    bot_id = raw.get("id")
    if not isinstance(bot_id, str) or not _BOT_ID.fullmatch(bot_id):
        raise SeedError(f"{where}.id: must be a string of digits, got {bot_id!r}")
    if bot_id in before:
        raise SeedError(f"{where}.id: bot {bot_id} appears twice")
    token = raw.get("token")
    if not isinstance(token, str) or not token.strip():
        raise SeedError(f"{where}.token: must be a non-empty string")
    if any(other.token == token for other in before.values()):
        raise SeedError(f"{where}.token: another bot has the same token")
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
    return bot


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
        *PROFILE_FIELDS,
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
    for name in PROFILE_FIELDS:
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
        last_interaction_at=last_interaction(raw, now, where),
        subscribed=subscribed,
        **strings,
    )


def last_interaction(raw: Mapping[str, Any], now: datetime, where: str) -> datetime | None:
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
