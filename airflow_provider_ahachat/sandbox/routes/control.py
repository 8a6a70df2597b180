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
    Add a user, given in the seed's form (see :mod:`..state`); 201, or 409 if the ID is taken.
``PATCH /_sandbox/users/<id>?bot_id=``
    Act as the customer. Any of: ``attributes`` (object, set), ``reset_attributes`` (names),
    ``add_tags``, ``remove_tags``, ``touch: true`` (the user writes now: last interaction = now),
    ``last_interaction_minutes_ago`` or ``last_interaction_at`` (ISO 8601 or null),
    ``subscribed``, profile fields (``first_name``, ``phone``...), and ``run_block`` (the user taps
    a button that starts this block: it counts as an interaction, the block's ``set_attributes``
    are saved and its messages go to the outbox with kind ``block``; then the JSON API steps of
    the blocks that ran call their URLs, see :mod:`.json_api`). Answers the user.
``POST /_sandbox/reset``
    Back to the seed (relative times counted from now), the starting knobs, an empty outbox and
    request log, and every counter at 0.
``GET /_sandbox/config``, ``POST /_sandbox/config``
    The knobs (:class:`~..state.SandboxConfig`): ``latency_ms``, ``rate_limit`` (requests per
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

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse

from airflow_provider_ahachat.sandbox.routes.answers import json_body, json_object, ok
from airflow_provider_ahachat.sandbox.state import ApiError, Bot, OutboxQuery, SandboxState

#: Where the control API lives; requests under it skip the knobs.
CONTROL_PREFIX = "/_sandbox"


def control_router(sandbox: SandboxState) -> APIRouter:
    """
    The control API's endpoints, serving ``sandbox``.

    :param sandbox: the state the endpoints read and change.
    """
    router = APIRouter(prefix=CONTROL_PREFIX)

    @router.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(control_docs_html())

    @router.get("/health")
    async def health() -> JSONResponse:
        return ok({"status": "ok"})

    @router.get("/bots")
    async def list_bots() -> JSONResponse:
        bots = [
            {**bot.to_json(), "users": len(bot.users), "blocks": bot.blocks} for bot in sandbox.bots.values()
        ]
        return ok(bots)

    @router.get("/outbox")
    async def outbox(
        user_id: str | None = None, bot_id: str | None = None, since: int = 0, limit: int | None = None
    ) -> JSONResponse:
        if limit is not None and limit < 0:
            raise ApiError(400, "limit: must be 0 or more")
        return ok(sandbox.outbox_json(OutboxQuery(user_id, bot_id, since, limit)))

    @router.get("/outbox/counts")
    async def outbox_counts(bot_id: str | None = None) -> JSONResponse:
        return ok(sandbox.outbox_counts(bot_id=bot_id))

    @router.post("/users/generate")
    async def generate_users(request: Request, bot_id: str | None = None) -> JSONResponse:
        bot = control_bot(sandbox, bot_id)
        return ok(sandbox.generate_users(bot, await json_object(request)), status=201)

    @router.get("/users")
    async def list_users(bot_id: str | None = None) -> JSONResponse:
        bots = [control_bot(sandbox, bot_id)] if bot_id is not None else list(sandbox.bots.values())
        return ok([user.to_json() for bot in bots for user in bot.users.values()])

    @router.post("/users")
    async def create_user(request: Request, bot_id: str | None = None) -> JSONResponse:
        bot = control_bot(sandbox, bot_id)
        return ok(sandbox.create_user(bot, await json_object(request)).to_json(), status=201)

    @router.get("/users/{user_id}")
    async def get_user(user_id: str, bot_id: str | None = None) -> JSONResponse:
        return ok(sandbox.control_user(user_id, bot_id)[1].to_json())

    @router.patch("/users/{user_id}")
    async def patch_user(user_id: str, request: Request, bot_id: str | None = None) -> JSONResponse:
        bot, user = sandbox.control_user(user_id, bot_id)
        entry = sandbox.patch_user(bot, user, await json_body(request))
        if entry is not None:  # the blocks that ran may hold JSON API steps (see ..json_api)
            await sandbox.json_api.run(sandbox, bot, user, entry.blocks)
        return ok(user.to_json())

    @router.post("/reset")
    async def reset() -> JSONResponse:
        sandbox.reset()
        return ok({"reset": True})

    @router.get("/config")
    async def get_config() -> JSONResponse:
        return ok(sandbox.config.to_json())

    @router.post("/config")
    async def set_config(request: Request) -> JSONResponse:
        sandbox.set_config(sandbox.config.updated(await json_body(request)))
        return ok(sandbox.config.to_json())

    @router.get("/stats")
    async def stats() -> JSONResponse:
        return ok(sandbox.stats())

    @router.get("/requests")
    async def request_log(limit: int = 100) -> JSONResponse:
        if limit < 0:
            raise ApiError(400, "limit: must be 0 or more")
        records = list(sandbox.requests)[-limit:] if limit else []
        return ok([record.to_json() for record in records])

    return router


def control_bot(state: SandboxState, bot_id: str | None) -> Bot:
    if bot_id is None:
        return state.default_bot
    bot = state.bots.get(bot_id)
    if bot is None:
        raise ApiError(404, f"bot {bot_id} not found")
    return bot


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
