"""
The control API under ``/_sandbox``: read what the bots delivered, act as a customer, turn the knobs.

It needs no token and goes through none of the knobs (:mod:`..middleware`). Answers are shaped by
:mod:`.answers`.

``GET /_sandbox/health``
    ``{"status": "ok"}``.
``GET /_sandbox/bots``
    Each bot's ``id``, ``name``, ``users`` (a count) and ``blocks`` (name to content); no token.
``GET /_sandbox/outbox?user_id=&bot_id=&since=&limit=``
    What the bots delivered, oldest first: entries with ``seq`` greater than ``since``, for one
    user or bot, the last ``limit`` of them. An entry is ``{"seq", "time", "bot_id",
    "messenger_user_id", "kind" (broadcast, text, dynamic or block), "block_name", "message_tag",
    "blocks" (every block that ran), "messages" (placeholders replaced), "text" (a readable
    summary, one line per message), "attributes" (saved by the request), "unresolved"}``.
``GET /_sandbox/outbox/counts?bot_id=``
    ``{user_id: number of outbox entries}``: who got how many deliveries, to check exactly-once.
``POST /_sandbox/users/generate?bot_id=``
    Add ``count`` numbered customers for tests at scale (``{"count", "start": 0, "in_window":
    true}``): number ``i`` has the ID ``9`` and ``i`` in 15 digits, the phone ``+849`` and ``i`` in
    8 digits. Answers ``{"added", "first", "last"}``.
``GET /_sandbox/users?bot_id=``, ``GET /_sandbox/users/<id>?bot_id=``
    Users as the API shows them. ``bot_id`` may be left out when only one bot has the user.
``POST /_sandbox/users?bot_id=``
    Add a user, given in the seed's form (see :mod:`..seed`); 201, or 409 if the ID is taken.
``PATCH /_sandbox/users/<id>?bot_id=``
    Act as the customer. Any of: ``attributes`` (object, set), ``reset_attributes`` (names),
    ``add_tags``, ``remove_tags``, ``touch: true`` (the user writes now: last interaction = now),
    ``last_interaction_minutes_ago`` or ``last_interaction_at`` (ISO 8601 or null),
    ``subscribed``, profile fields (``first_name``, ``phone``...), and ``run_block`` (the user taps
    a button that starts this block: it counts as an interaction, the block's ``set_attributes``
    are saved and its messages go to the outbox with kind ``block``; then the JSON API steps of
    the blocks that ran call their URLs, see :mod:`..json_api`). Answers the user.
``POST /_sandbox/reset``
    Back to the seed (relative times counted from now), the starting knobs, an empty outbox and
    request log, and every counter at 0.
``GET /_sandbox/config``, ``POST /_sandbox/config``
    The knobs (:class:`~..knobs.SandboxConfig`): ``latency_ms``, ``rate_limit`` (requests per
    second, 0 off), ``retry_after`` (least ``Retry-After`` of a 429; 0 allowed), ``error_rate``,
    ``error_status`` (a status, or a list to draw from), ``deliver_before_fail``, ``fail_next`` and
    ``messenger_rules`` (``"2026"``, or ``"2025"`` for the rules before 27 April 2026).
    POST changes the knobs it names and answers all of them; ``fail_next`` replaces the queue, and
    each item is a status or ``{"status": 500, "deliver": true}``.
``GET /_sandbox/stats``
    ``{"since", "total", "by_status": {"200": n}, "by_route": {"GET /api/bots/{bot_id}": {"200": n}},
    "outbox"}`` over answered API requests.
``GET /_sandbox/requests?limit=100``
    The last API requests, oldest first: ``{"seq", "time", "method", "path", "query" (the token
    shown as ``***``; a repeated name gives a list), "body" (parsed JSON, else text), "status",
    "duration_ms", "note"}``.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse

from airflow_provider_ahachat.exceptions import AhaChatValidationError
from airflow_provider_ahachat.models import validate_attribute_names, validate_attributes, validate_tags
from airflow_provider_ahachat.sandbox.knobs import number
from airflow_provider_ahachat.sandbox.outbox import OutboxEntry, OutboxQuery
from airflow_provider_ahachat.sandbox.routes.answers import json_body, json_object, ok
from airflow_provider_ahachat.sandbox.seed import SeedError, build_user, last_interaction
from airflow_provider_ahachat.sandbox.state import SandboxState
from airflow_provider_ahachat.sandbox.world import (
    PROFILE_FIELDS,
    ApiError,
    Bot,
    SandboxUser,
    phone_key,
    synthetic_phone,
    synthetic_user_id,
    utcnow,
)

#: Where the control API lives; requests under it skip the knobs.
CONTROL_PREFIX = "/_sandbox"


def sandbox_of(request: Request) -> SandboxState:
    """The state the app serves (``app.state.sandbox``), for the routes that read or change it."""
    state: SandboxState = request.app.state.sandbox
    return state


Sandbox = Depends(sandbox_of)

#: The control API's endpoints, serving the app's state.
router = APIRouter(prefix=CONTROL_PREFIX)


# --------------------------------------------------------------------------- the routes


@router.get("/docs", include_in_schema=False)
async def docs() -> HTMLResponse:
    return HTMLResponse(control_docs_html())


@router.get("/health")
async def health() -> JSONResponse:
    return ok({"status": "ok"})


@router.get("/bots")
async def list_bots(sandbox: SandboxState = Sandbox) -> JSONResponse:
    bots = [{**bot.to_json(), "users": len(bot.users), "blocks": bot.blocks} for bot in sandbox.bots.values()]
    return ok(bots)


@router.get("/outbox")
async def outbox(
    user_id: str | None = None,
    bot_id: str | None = None,
    since: int = 0,
    limit: int | None = None,
    sandbox: SandboxState = Sandbox,
) -> JSONResponse:
    if limit is not None and limit < 0:
        raise ApiError(400, "limit: must be 0 or more")
    return ok(sandbox.outbox_json(OutboxQuery(user_id, bot_id, since, limit)))


@router.get("/outbox/counts")
async def outbox_counts(bot_id: str | None = None, sandbox: SandboxState = Sandbox) -> JSONResponse:
    return ok(sandbox.outbox_counts(bot_id=bot_id))


@router.post("/users/generate")
async def generate(
    request: Request, bot_id: str | None = None, sandbox: SandboxState = Sandbox
) -> JSONResponse:
    bot = control_bot(sandbox, bot_id)
    return ok(generate_users(bot, await json_object(request)), status=201)


@router.get("/users")
async def list_users(bot_id: str | None = None, sandbox: SandboxState = Sandbox) -> JSONResponse:
    bots = [control_bot(sandbox, bot_id)] if bot_id is not None else list(sandbox.bots.values())
    return ok([user.to_json() for bot in bots for user in bot.users.values()])


@router.post("/users")
async def add_user(
    request: Request, bot_id: str | None = None, sandbox: SandboxState = Sandbox
) -> JSONResponse:
    bot = control_bot(sandbox, bot_id)
    return ok(create_user(bot, await json_object(request)).to_json(), status=201)


@router.get("/users/{user_id}")
async def get_user(user_id: str, bot_id: str | None = None, sandbox: SandboxState = Sandbox) -> JSONResponse:
    return ok(control_user(sandbox, user_id, bot_id)[1].to_json())


@router.patch("/users/{user_id}")
async def change_user(
    user_id: str, request: Request, bot_id: str | None = None, sandbox: SandboxState = Sandbox
) -> JSONResponse:
    bot, user = control_user(sandbox, user_id, bot_id)
    entry = patch_user(sandbox, bot, user, await json_body(request))
    if entry is not None:  # the blocks that ran may hold JSON API steps (see ..json_api)
        await sandbox.json_api.run(sandbox.deliver, bot, user, entry.blocks)
    return ok(user.to_json())


@router.post("/reset")
async def reset(sandbox: SandboxState = Sandbox) -> JSONResponse:
    sandbox.reset()
    return ok({"reset": True})


@router.get("/config")
async def get_config(sandbox: SandboxState = Sandbox) -> JSONResponse:
    return ok(sandbox.config.to_json())


@router.post("/config")
async def set_config(request: Request, sandbox: SandboxState = Sandbox) -> JSONResponse:
    sandbox.set_config(sandbox.config.updated(await json_body(request)))
    return ok(sandbox.config.to_json())


@router.get("/stats")
async def stats(sandbox: SandboxState = Sandbox) -> JSONResponse:
    return ok(sandbox.stats())


@router.get("/requests")
async def request_log(limit: int = 100, sandbox: SandboxState = Sandbox) -> JSONResponse:
    if limit < 0:
        raise ApiError(400, "limit: must be 0 or more")
    records = list(sandbox.requests)[-limit:] if limit else []
    return ok([record.to_json() for record in records])


# --------------------------------------------------------------------------- what the routes do


def control_bot(state: SandboxState, bot_id: str | None) -> Bot:
    """The bot ``bot_id`` names, or the seed's first."""
    if bot_id is None:
        return state.default_bot
    bot = state.bots.get(bot_id)
    if bot is None:
        raise ApiError(404, f"bot {bot_id} not found")
    return bot


def control_user(state: SandboxState, user_id: str, bot_id: str | None = None) -> tuple[Bot, SandboxUser]:
    """A user for the control API: in ``bot_id`` if given, else in the only bot that has them."""
    if bot_id is not None:
        bot = control_bot(state, bot_id)
        return bot, state.user(bot, user_id)
    found = [(bot, bot.users[user_id]) for bot in state.bots.values() if user_id in bot.users]
    if not found:
        raise ApiError(404, f"user {user_id} not found")
    if len(found) > 1:
        raise ApiError(400, f"user {user_id} is in several bots; give ?bot_id=")
    return found[0]


def generate_users(bot: Bot, changes: Any) -> dict[str, Any]:
    """
    Add ``count`` numbered customers for tests at scale; see ``POST /_sandbox/users/generate``.

    User number ``i`` has the ID :func:`~..world.synthetic_user_id` (i) and the phone
    :func:`~..world.synthetic_phone` (i); ``in_window`` says whether they wrote in the last 24 hours.
    """
    if not isinstance(changes, Mapping):
        raise ApiError(400, "body: must be a JSON object")
    unknown = set(changes) - {"count", "start", "in_window"}
    if unknown:
        raise ApiError(
            400, f"unknown field(s) {', '.join(sorted(unknown))}; expected count, start, in_window"
        )
    count = int(number(changes.get("count"), "count", 0, 2_000_000, integer=True))
    start = int(number(changes.get("start", 0), "start", 0, 10**14, integer=True))
    in_window = changes.get("in_window", True)
    if not isinstance(in_window, bool):
        raise ApiError(400, f"in_window: must be true or false, got {in_window!r}")
    taken = next((n for n in range(start, start + count) if synthetic_user_id(n) in bot.users), None)
    if taken is not None:
        raise ApiError(409, f"user {synthetic_user_id(taken)} already exists in bot {bot.id}; nothing added")
    now = utcnow()
    last = now - timedelta(minutes=5) if in_window else now - timedelta(days=3)
    for each in range(start, start + count):
        bot.add_user(
            SandboxUser(
                messenger_user_id=synthetic_user_id(each),
                first_name=f"Khách {each}",
                phone=synthetic_phone(each),
                last_interaction_at=last,
            )
        )
    return {
        "added": count,
        "first": synthetic_user_id(start) if count else None,
        "last": synthetic_user_id(start + count - 1) if count else None,
    }


def create_user(bot: Bot, raw: Any) -> SandboxUser:
    """Add a user from its seed form; 400 if bad, 409 if the ID is taken."""
    try:
        user = build_user(raw, utcnow(), "body")
    except SeedError as err:
        raise ApiError(400, str(err)) from None
    if user.messenger_user_id in bot.users:
        raise ApiError(409, f"user {user.messenger_user_id} already exists in bot {bot.id}")
    bot.add_user(user)
    return user


#: The changes ``PATCH /_sandbox/users/<id>`` takes that are a list or an object, each with its
#: rule, in the order they are checked.
_CHECKS: dict[str, Callable[[Any, str], Any]] = {
    "attributes": lambda value, field: validate_attributes(value, field, allow_empty=True),
    "reset_attributes": validate_attribute_names,
    "add_tags": validate_tags,
    "remove_tags": validate_tags,
}
#: How each of them changes the user, in the order they are applied.
_CHANGES: dict[str, Callable[[SandboxUser, Any], None]] = {
    "reset_attributes": SandboxUser.reset_attributes,
    "attributes": SandboxUser.set_attributes,
    "add_tags": SandboxUser.add_tags,
    "remove_tags": SandboxUser.remove_tags,
}
_FLAGS = ("subscribed", "touch")
_PATCHABLE = frozenset(
    {
        *_CHECKS,
        *_FLAGS,
        "last_interaction_at",
        "last_interaction_minutes_ago",
        "run_block",
        *(name for name in PROFILE_FIELDS if name != "messenger_user_id"),
    }
)


def _checked_changes(changes: Any) -> dict[str, Any]:
    """The list and object changes, checked; 400 naming the first bad field."""
    if not isinstance(changes, Mapping):
        raise ApiError(400, "body: must be a JSON object")
    unknown = sorted(set(changes) - _PATCHABLE)
    if unknown:
        expected = ", ".join(sorted(_PATCHABLE))
        raise ApiError(400, f"body: unknown field(s) {', '.join(unknown)}; expected {expected}")
    try:
        values = {name: check(changes[name], name) for name, check in _CHECKS.items() if name in changes}
        if changes.get("phone") is not None:
            phone_key(changes["phone"])
    except AhaChatValidationError as err:
        raise ApiError.invalid(err) from None
    return values


def _check_flags_and_profile(changes: Mapping[str, Any]) -> None:
    for name in _FLAGS:
        if name in changes and not isinstance(changes[name], bool):
            raise ApiError(400, f"{name}: must be true or false")
    for name in PROFILE_FIELDS:
        value = changes.get(name)
        if value is not None and not isinstance(value, str):
            raise ApiError(400, f"{name}: must be a string or null")


def patch_user(state: SandboxState, bot: Bot, user: SandboxUser, changes: Any) -> OutboxEntry | None:
    """
    Change a user as if they acted; see ``PATCH /_sandbox/users/<id>``. Everything is checked before
    anything changes. Returns the outbox entry of the block the user started, if any.
    """
    values = _checked_changes(changes)
    try:
        moment = last_interaction(changes, utcnow(), "body")
    except SeedError as err:
        raise ApiError(400, str(err)) from None
    _check_flags_and_profile(changes)
    block_name = state.block(bot, changes["run_block"], "run_block") if changes.get("run_block") else None

    for name in PROFILE_FIELDS:
        if name in changes and name != "messenger_user_id":
            setattr(user, name, changes[name])
    if "phone" in changes:
        bot.reindex_phones()
    for name, change in _CHANGES.items():
        if name in values:
            change(user, values[name])
    if "subscribed" in changes:
        user.subscribed = changes["subscribed"]
    if "last_interaction_at" in changes or "last_interaction_minutes_ago" in changes:
        user.last_interaction_at = moment
    if changes.get("touch"):
        user.last_interaction_at = utcnow()
    return state.run_block(bot, user, block_name) if block_name is not None else None


def control_docs_html() -> str:
    """
    ``/_sandbox/docs``: this module's list of endpoints as one plain HTML page.

    No script and nothing fetched from elsewhere, so that it reads the same offline.
    """

    def inline(text: str) -> str:
        escaped = html.escape(text, quote=False)
        escaped = re.sub(r":(?:class|mod):`~?[.]*([^`]+)`", r"<code>\1</code>", escaped)
        return re.sub(r"``(.+?)``", r"<code>\1</code>", escaped)

    doc = __doc__ or ""
    intro, _, listing = doc.strip().partition("\n\n``")
    entries: list[tuple[str, list[str]]] = []
    for line in ("``" + listing).splitlines():
        if line.startswith("``"):
            entries.append((line, []))
        elif entries and line.strip():
            entries[-1][1].append(line.strip())
    items = "\n".join(f"<dt>{inline(head)}</dt><dd>{inline(' '.join(body))}</dd>" for head, body in entries)
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<title>AhaChat sandbox: control API</title>"
        "<style>body{font:15px/1.5 system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
        "dt{margin-top:1em;font-weight:600}code{background:#f3f3f3;padding:0 .2em}</style></head><body>"
        f"<h1>AhaChat sandbox: control API</h1><p>{inline(' '.join(intro.split()))}</p>"
        "<p>Every endpoint answers JSON; none needs a token. The API itself (under <code>/api</code>) "
        "is described in the provider's README. Machine-readable: "
        f"<code>{CONTROL_PREFIX}/openapi.json</code>.</p>"
        f"<dl>{items}</dl></body></html>"
    )
