"""
The sandbox's HTTP API: AhaChat's contract under ``/api``, and a control API under ``/_sandbox``.

The AhaChat API (``/api/bots/...``) follows ``ahachat-api.md``: the two Broadcast API forms, the
connection check, find user by ID or phone, add and remove tags, add and reset attributes, and
text or dynamic messages. Every answer is ``{"success": true, "data": ...}`` or
``{"success": false, "message": "..."}``; answers to invalid input also carry ``problems``, one
line per problem, each naming its field. Authentication: ``ahachat_token`` missing or no bot's
token is 401, a bot that does not exist is 404, another bot's token is 403.

Every request outside ``/_sandbox`` is an *API request*: it goes through the knobs (rate limit,
latency, injected errors), into the request log and into the stats. The control API needs no
token and goes through none of them:

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
    Add a user, given in the seed's form (see :mod:`.state`); 201, or 409 if the ID is taken.
``PATCH /_sandbox/users/<id>?bot_id=``
    Act as the customer. Any of: ``attributes`` (object, set), ``reset_attributes`` (names),
    ``add_tags``, ``remove_tags``, ``touch: true`` (the user writes now: last interaction = now),
    ``last_interaction_minutes_ago`` or ``last_interaction_at`` (ISO 8601 or null),
    ``subscribed``, profile fields (``first_name``, ``phone``...), and ``run_block`` (the user taps
    a button that starts this block: it counts as an interaction, the block's ``set_attributes``
    are saved and its messages go to the outbox with kind ``block``). Answers the user.
``POST /_sandbox/reset``
    Back to the seed (relative times counted from now), the starting knobs, an empty outbox and
    request log, and every counter at 0.
``GET /_sandbox/config``, ``POST /_sandbox/config``
    The knobs (:class:`~.state.SandboxConfig`): ``latency_ms``, ``rate_limit`` (requests per
    second, 0 off), ``retry_after`` (least ``Retry-After`` of a 429; 0 allowed), ``error_rate``,
    ``error_status`` (a status, or a list to draw from), ``deliver_before_fail`` and ``fail_next``.
    POST changes the knobs it names and answers all of them; ``fail_next`` replaces the queue, and
    each item is a status or ``{"status": 500, "deliver": true}``.
``GET /_sandbox/stats``
    ``{"since", "total", "by_status": {"200": n}, "by_route": {"GET /api/bots/{bot_id}": {"200": n}},
    "outbox"}`` over answered API requests.
``GET /_sandbox/requests?limit=100``
    The last API requests, oldest first: ``{"seq", "time", "method", "path", "query" (the token
    shown as ``***``; a repeated name gives a list), "body" (parsed JSON, else text), "status",
    "duration_ms", "note"}``.

Order of the knobs for an API request: the rate limit first (a 429 with ``Retry-After`` at once,
nothing processed), then the latency, then an injected error from ``fail_next`` or
``error_rate``. An injected error is answered without processing the request, unless
``deliver_before_fail`` (or the fault's own ``deliver``) is true: then the request is processed as
usual (the message delivered, the tag added) and its answer replaced by the error, as when a
server fails after doing the work.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Router

from airflow_provider_ahachat.exceptions import AhaChatValidationError
from airflow_provider_ahachat.models import (
    RESERVED_ATTRIBUTE_NAMES,
    DynamicMessage,
    MessageTag,
    validate_attribute_names,
    validate_attributes,
    validate_tags,
)
from airflow_provider_ahachat.sandbox.state import ApiError, Bot, SandboxState

CONTROL_PREFIX = "/_sandbox"

#: Broadcast query names that are parameters, not attributes (``phone`` only in the phone form).
_BROADCAST_PARAMETERS = frozenset({"ahachat_token", "ahachat_message_tag", "ahachat_block_name"})
#: Bytes of a request body kept in the request log.
_LOGGED_BODY = 65_536

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def ok(data: Any, status: int = 200) -> JSONResponse:
    """A success answer."""
    return JSONResponse({"success": True, "data": data}, status_code=status)


async def json_body(request: Request) -> Any:
    """The request's JSON body; 400 if empty or not JSON."""
    raw = await request.body()
    if not raw.strip():
        raise ApiError(400, "body: must be JSON, got an empty body")
    try:
        return json.loads(raw)
    except ValueError as err:
        raise ApiError(400, f"body: not valid JSON ({err})") from None


async def json_object(request: Request) -> Mapping[str, Any]:
    """The request's JSON body, which must be an object; 400 otherwise."""
    body = await json_body(request)
    if not isinstance(body, Mapping):
        raise ApiError(400, f"body: must be a JSON object, got {type(body).__name__}")
    return body


def _checked(rule: Callable[..., Any], *args: Any) -> Any:
    try:
        return rule(*args)
    except AhaChatValidationError as err:
        raise ApiError.invalid(err) from None


def broadcast_parameters(
    state: SandboxState, bot: Bot, request: Request, *, by_phone: bool
) -> tuple[MessageTag, str, dict[str, Any]]:
    """
    The message tag, block name and attributes of a Broadcast API request.

    A reserved name given twice means an attribute took a reserved name: 400. A missing or unknown
    message tag is 400, a missing block name 400, an unknown block 404.
    """
    items = request.query_params.multi_items()
    repeated = Counter(name for name, _ in items if name in RESERVED_ATTRIBUTE_NAMES)
    for name, times in repeated.items():
        if times > 1:
            raise ApiError(
                400,
                f"attributes.{name}: attribute name {name!r} is reserved by the Broadcast API "
                f"(the query gives it {times} times)",
            )
    raw_tag = request.query_params.get("ahachat_message_tag")
    if not raw_tag:
        tags = ", ".join(tag.value for tag in MessageTag)
        raise ApiError(400, f"ahachat_message_tag: required; use one of {tags}")
    tag = _checked(MessageTag.parse, raw_tag, "ahachat_message_tag")
    given = {
        name: value
        for name, value in items
        if name not in _BROADCAST_PARAMETERS and not (by_phone and name == "phone")
    }
    attributes = _checked(lambda: validate_attributes(given, "attributes", allow_empty=True))
    block_name = state.block(bot, request.query_params.get("ahachat_block_name"))
    return tag, block_name, attributes


def create_app(state: SandboxState | None = None) -> FastAPI:
    """
    Build the sandbox's ASGI app.

    :param state: the state to serve; a fresh one from the packaged seed by default.
    """
    sandbox = state if state is not None else SandboxState()
    app = FastAPI(
        title="AhaChat sandbox",
        description="An in-memory AhaChat for tests and demos.",
        docs_url=f"{CONTROL_PREFIX}/docs",
        redoc_url=None,
        openapi_url=f"{CONTROL_PREFIX}/openapi.json",
    )
    app.state.sandbox = sandbox
    app.add_middleware(ApiKnobs, state=sandbox, router=app.router)

    async def api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return JSONResponse(exc.to_json(), status_code=exc.status, headers=exc.headers)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404:
            message = f"no such endpoint: {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"method {request.method} not allowed on {request.url.path}"
        else:
            message = str(exc.detail)
        return JSONResponse({"success": False, "message": message}, status_code=exc.status_code)

    async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        problems = [
            f"{'.'.join(str(part) for part in error.get('loc', ()))}: {error.get('msg')}"
            for error in exc.errors()
        ]
        body = {"success": False, "message": "; ".join(problems), "problems": problems}
        return JSONResponse(body, status_code=400)

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        message = f"internal error of the sandbox ({type(exc).__name__})"
        return JSONResponse({"success": False, "message": message}, status_code=500)

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(Exception, unexpected)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid_request)

    def bot_of(bot_id: str, request: Request) -> Bot:
        return sandbox.bot(bot_id, request.query_params.get("ahachat_token"))

    # ------------------------------------------------------------------ the AhaChat API

    @app.get("/api/bots/{bot_id}")
    async def check_connection(bot_id: str, request: Request) -> JSONResponse:
        return ok(bot_of(bot_id, request).to_json())

    @app.get("/api/bots/{bot_id}/users")
    async def find_user_by_phone(bot_id: str, request: Request) -> JSONResponse:
        bot = bot_of(bot_id, request)
        return ok(sandbox.user_by_phone(bot, request.query_params.get("phone")).to_json())

    @app.get("/api/bots/{bot_id}/users/{user_id}")
    async def find_user(bot_id: str, user_id: str, request: Request) -> JSONResponse:
        bot = bot_of(bot_id, request)
        return ok(sandbox.user(bot, user_id).to_json())

    @app.post("/api/bots/{bot_id}/users/{user_id}/send")
    async def broadcast_to_user(bot_id: str, user_id: str, request: Request) -> JSONResponse:
        bot = bot_of(bot_id, request)
        tag, block_name, attributes = broadcast_parameters(sandbox, bot, request, by_phone=False)
        user = sandbox.user(bot, user_id)
        entry = sandbox.broadcast(bot, user, tag=tag, block_name=block_name, attributes=attributes)
        return ok(_sent(entry.messenger_user_id, entry.seq, len(entry.messages), block_name, tag))

    @app.post("/api/bots/{bot_id}/phones/send")
    async def broadcast_to_phone(bot_id: str, request: Request) -> JSONResponse:
        bot = bot_of(bot_id, request)
        tag, block_name, attributes = broadcast_parameters(sandbox, bot, request, by_phone=True)
        user = sandbox.user_by_phone(bot, request.query_params.get("phone"))
        entry = sandbox.broadcast(bot, user, tag=tag, block_name=block_name, attributes=attributes)
        return ok(_sent(entry.messenger_user_id, entry.seq, len(entry.messages), block_name, tag))

    @app.post("/api/bots/{bot_id}/users/{user_id}/tags")
    async def add_tags(bot_id: str, user_id: str, request: Request) -> JSONResponse:
        bot = bot_of(bot_id, request)
        tags = _checked(validate_tags, (await json_object(request)).get("tags"), "tags")
        user = sandbox.user(bot, user_id)
        user.add_tags(tags)
        return ok(user.to_json())

    @app.post("/api/bots/{bot_id}/users/{user_id}/tags/remove")
    async def remove_tags(bot_id: str, user_id: str, request: Request) -> JSONResponse:
        bot = bot_of(bot_id, request)
        tags = _checked(validate_tags, (await json_object(request)).get("tags"), "tags")
        user = sandbox.user(bot, user_id)
        user.remove_tags(tags)
        return ok(user.to_json())

    @app.post("/api/bots/{bot_id}/users/{user_id}/attributes")
    async def add_attributes(bot_id: str, user_id: str, request: Request) -> JSONResponse:
        bot = bot_of(bot_id, request)
        attributes = _checked(
            validate_attributes, (await json_object(request)).get("attributes"), "attributes"
        )
        user = sandbox.user(bot, user_id)
        user.set_attributes(attributes)
        return ok(user.to_json())

    @app.post("/api/bots/{bot_id}/users/{user_id}/attributes/reset")
    async def reset_attributes(bot_id: str, user_id: str, request: Request) -> JSONResponse:
        bot = bot_of(bot_id, request)
        names = _checked(
            validate_attribute_names, (await json_object(request)).get("attributes"), "attributes"
        )
        user = sandbox.user(bot, user_id)
        user.reset_attributes(names)
        return ok(user.to_json())

    @app.post("/api/bots/{bot_id}/users/{user_id}/messages")
    async def send_message(bot_id: str, user_id: str, request: Request) -> JSONResponse:
        bot = bot_of(bot_id, request)
        message = _checked(DynamicMessage.parse, await json_body(request), "body")
        user = sandbox.user(bot, user_id)
        entry = sandbox.send_message(bot, user, message)
        return ok(
            {
                "messenger_user_id": user.messenger_user_id,
                "messages_sent": len(entry.messages),
                "outbox_seq": entry.seq,
            }
        )

    # ------------------------------------------------------------------ the control API

    @app.get(f"{CONTROL_PREFIX}/health")
    async def health() -> JSONResponse:
        return ok({"status": "ok"})

    @app.get(f"{CONTROL_PREFIX}/bots")
    async def list_bots() -> JSONResponse:
        bots = [
            {**bot.to_json(), "users": len(bot.users), "blocks": bot.blocks} for bot in sandbox.bots.values()
        ]
        return ok(bots)

    @app.get(f"{CONTROL_PREFIX}/outbox")
    async def outbox(
        user_id: str | None = None, bot_id: str | None = None, since: int = 0, limit: int | None = None
    ) -> JSONResponse:
        if limit is not None and limit < 0:
            raise ApiError(400, "limit: must be 0 or more")
        return ok(sandbox.outbox_json(user_id=user_id, bot_id=bot_id, since=since, limit=limit))

    @app.get(f"{CONTROL_PREFIX}/outbox/counts")
    async def outbox_counts(bot_id: str | None = None) -> JSONResponse:
        return ok(sandbox.outbox_counts(bot_id=bot_id))

    @app.post(f"{CONTROL_PREFIX}/users/generate")
    async def generate_users(request: Request, bot_id: str | None = None) -> JSONResponse:
        bot = _control_bot(sandbox, bot_id)
        return ok(sandbox.generate_users(bot, await json_object(request)), status=201)

    @app.get(f"{CONTROL_PREFIX}/users")
    async def list_users(bot_id: str | None = None) -> JSONResponse:
        bots = [_control_bot(sandbox, bot_id)] if bot_id is not None else list(sandbox.bots.values())
        return ok([user.to_json() for bot in bots for user in bot.users.values()])

    @app.post(f"{CONTROL_PREFIX}/users")
    async def create_user(request: Request, bot_id: str | None = None) -> JSONResponse:
        bot = _control_bot(sandbox, bot_id)
        return ok(sandbox.create_user(bot, await json_object(request)).to_json(), status=201)

    @app.get(f"{CONTROL_PREFIX}/users/{{user_id}}")
    async def get_user(user_id: str, bot_id: str | None = None) -> JSONResponse:
        return ok(sandbox.control_user(user_id, bot_id)[1].to_json())

    @app.patch(f"{CONTROL_PREFIX}/users/{{user_id}}")
    async def patch_user(user_id: str, request: Request, bot_id: str | None = None) -> JSONResponse:
        bot, user = sandbox.control_user(user_id, bot_id)
        sandbox.patch_user(bot, user, await json_body(request))
        return ok(user.to_json())

    @app.post(f"{CONTROL_PREFIX}/reset")
    async def reset() -> JSONResponse:
        sandbox.reset()
        return ok({"reset": True})

    @app.get(f"{CONTROL_PREFIX}/config")
    async def get_config() -> JSONResponse:
        return ok(sandbox.config.to_json())

    @app.post(f"{CONTROL_PREFIX}/config")
    async def set_config(request: Request) -> JSONResponse:
        sandbox.set_config(sandbox.config.updated(await json_body(request)))
        return ok(sandbox.config.to_json())

    @app.get(f"{CONTROL_PREFIX}/stats")
    async def stats() -> JSONResponse:
        return ok(sandbox.stats())

    @app.get(f"{CONTROL_PREFIX}/requests")
    async def request_log(limit: int = 100) -> JSONResponse:
        if limit < 0:
            raise ApiError(400, "limit: must be 0 or more")
        records = list(sandbox.requests)[-limit:] if limit else []
        return ok([record.to_json() for record in records])

    return app


def _sent(user_id: str, seq: int, messages: int, block_name: str, tag: MessageTag) -> dict[str, Any]:
    return {
        "messenger_user_id": user_id,
        "block_name": block_name,
        "message_tag": tag.value,
        "messages_sent": messages,
        "outbox_seq": seq,
    }


def _control_bot(state: SandboxState, bot_id: str | None) -> Bot:
    if bot_id is None:
        return state.default_bot
    bot = state.bots.get(bot_id)
    if bot is None:
        raise ApiError(404, f"bot {bot_id} not found")
    return bot


# --------------------------------------------------------------------------- the knobs, as ASGI middleware


class ApiKnobs:
    """
    Rate limit, latency, injected errors, request log and stats for every API request.

    Plain ASGI (no per-request task or copy), so that it costs microseconds.

    :param app: the ASGI app it wraps.
    :param state: the sandbox state holding the knobs, log and counters.
    :param router: the app's router, to name the route of requests the app never saw.
    """

    def __init__(self, app: ASGIApp, state: SandboxState, router: Router) -> None:
        self.app = app
        self.state = state
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(CONTROL_PREFIX):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state = self.state
        body = await _read_body(receive)
        if body is None:
            return
        record = state.log_request(scope["method"], scope["path"], scope["query_string"], body[:_LOGGED_BODY])
        status = 500
        note: str | None = None

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            retry_after = state.rate_limited()
            if retry_after:
                note = "rate_limited"
                status = 429
                await _answer(send, 429, "rate limited", retry_after)
                return
            if state.config.latency_ms > 0:
                await asyncio.sleep(state.config.latency_ms / 1000)
            fault = state.next_fault()
            if fault is None:
                await self.app(scope, _replay(body, receive), send_and_note)
                return
            if state.fault_delivers(fault):
                note = "injected_after_processing"
                await self.app(scope, _replay(body, receive), _discard)
            else:
                note = "injected"
            status = fault.status
            phrase = (
                HTTPStatus(fault.status).phrase if fault.status in HTTPStatus._value2member_map_ else "Error"
            )
            retry = state.config.retry_after if fault.status == 429 else None
            await _answer(send, fault.status, f"{phrase} (injected by the sandbox)", retry)
        finally:
            record.status = status
            record.note = note
            record.duration_ms = (time.perf_counter() - started) * 1000
            state.count(self._route(scope), status)

    def _route(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is None:
            for candidate in self.router.routes:
                match, _ = candidate.matches(scope)
                if match == Match.FULL:
                    route = candidate
                    break
        path = getattr(route, "path", None)
        return f"{scope['method']} {path}" if path else f"{scope['method']} (no route)"


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if delivered:
            return await receive()
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def _discard(message: Message) -> None:
    return None


async def _answer(send: Send, status: int, message: str, retry_after: int | None = None) -> None:
    body = json.dumps({"success": False, "message": message}, ensure_ascii=False).encode("utf-8")
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
