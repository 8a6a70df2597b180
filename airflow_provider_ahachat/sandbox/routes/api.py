"""
AhaChat's contract under ``/api``: what the provider's client talks to.

The endpoints follow ``ahachat-api.md``: the two Broadcast API forms, the connection check, find
user by ID or phone, add and remove tags, add and reset attributes, and text or dynamic messages.
Answers are shaped by :mod:`.answers`; the Broadcast API's in Chatfuel's shape, as AhaChat's
copies Chatfuel's. Authentication: ``ahachat_token`` missing or no bot's token
is 401, a bot that does not exist is 404, another bot's token is 403.

Every request to these endpoints goes through the knobs first (:mod:`..middleware`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from airflow_provider_ahachat.models import (
    RESERVED_ATTRIBUTE_NAMES,
    DynamicMessage,
    MessageTag,
    validate_attribute_names,
    validate_attributes,
    validate_tags,
)
from airflow_provider_ahachat.sandbox.routes.answers import (
    broadcast_ok,
    broadcast_refused,
    json_body,
    json_object,
    ok,
)
from airflow_provider_ahachat.sandbox.state import ApiError, Bot, SandboxState, SandboxUser, checked

#: Broadcast query names that are parameters, not attributes (``phone`` only in the phone form).
_BROADCAST_PARAMETERS = frozenset({"ahachat_token", "ahachat_message_tag", "ahachat_block_name"})


def broadcast_parameters(
    state: SandboxState, bot: Bot, request: Request, *, by_phone: bool
) -> tuple[MessageTag | None, str, dict[str, Any]]:
    """
    The message tag (None: none, a standard message), block name and attributes of a Broadcast API
    request.

    A reserved name given twice means an attribute took a reserved name: 400. A message tag AhaChat
    does not list is 400 (one it lists that Meta retired is Messenger's to refuse), a missing block
    name 400, an unknown block 404.
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
    tag = checked(MessageTag.parse, raw_tag, "ahachat_message_tag") if raw_tag else None
    given = {
        name: value
        for name, value in items
        if name not in _BROADCAST_PARAMETERS and not (by_phone and name == "phone")
    }
    attributes = checked(
        lambda: validate_attributes(given, "attributes", allow_empty=True, by_phone=by_phone)
    )
    block_name = state.block(bot, request.query_params.get("ahachat_block_name"))
    return tag, block_name, attributes


def api_router(sandbox: SandboxState) -> APIRouter:
    """
    The AhaChat API's endpoints, serving ``sandbox``.

    :param sandbox: the state the endpoints read and change.
    """
    router = APIRouter()

    def bot_of(bot_id: str, request: Request) -> Bot:
        return sandbox.bot(bot_id, request.query_params.get("ahachat_token"))

    @router.get("/api/bots/{bot_id}")
    async def check_connection(bot_id: str, request: Request) -> JSONResponse:
        return ok(bot_of(bot_id, request).to_json())

    @router.get("/api/bots/{bot_id}/users")
    async def find_user_by_phone(bot_id: str, request: Request) -> JSONResponse:
        bot = bot_of(bot_id, request)
        return ok(sandbox.user_by_phone(bot, request.query_params.get("phone")).to_json())

    @router.get("/api/bots/{bot_id}/users/{user_id}")
    async def find_user(bot_id: str, user_id: str, request: Request) -> JSONResponse:
        bot = bot_of(bot_id, request)
        return ok(sandbox.user(bot, user_id).to_json())

    def broadcast(bot_id: str, request: Request, user_id: str | None) -> JSONResponse:
        try:
            bot = bot_of(bot_id, request)
            by_phone = user_id is None
            tag, block_name, attributes = broadcast_parameters(sandbox, bot, request, by_phone=by_phone)
            if user_id is None:
                user = sandbox.user_by_phone(bot, request.query_params.get("phone"))
            else:
                user = sandbox.user(bot, user_id)
            entry = sandbox.broadcast(bot, user, tag=tag, block_name=block_name, attributes=attributes)
        except ApiError as err:
            return broadcast_refused(err)
        how = f"with the tag {tag.value}" if tag is not None else "without a tag"
        return broadcast_ok(
            f"Block {block_name!r} sent to user {entry.messenger_user_id} {how}: "
            f"{len(entry.messages)} message(s), outbox #{entry.seq}"
        )

    @router.post("/api/bots/{bot_id}/users/{user_id}/send")
    async def broadcast_to_user(bot_id: str, user_id: str, request: Request) -> JSONResponse:
        return broadcast(bot_id, request, user_id)

    @router.post("/api/bots/{bot_id}/phones/send")
    async def broadcast_to_phone(bot_id: str, request: Request) -> JSONResponse:
        return broadcast(bot_id, request, None)

    def user_change(
        field: str, validate: Callable[[Any, str], Any], change: Callable[[SandboxUser, Any], None]
    ) -> Callable[[str, str, Request], Awaitable[JSONResponse]]:
        """A route that validates the body's ``field`` and applies it to the user, who is answered."""

        async def route(bot_id: str, user_id: str, request: Request) -> JSONResponse:
            bot = bot_of(bot_id, request)
            value = checked(validate, (await json_object(request)).get(field), field)
            user = sandbox.user(bot, user_id)
            change(user, value)
            return ok(user.to_json())

        return route

    for path, field, validate, change in (
        ("tags", "tags", validate_tags, SandboxUser.add_tags),
        ("tags/remove", "tags", validate_tags, SandboxUser.remove_tags),
        ("attributes", "attributes", validate_attributes, SandboxUser.set_attributes),
        ("attributes/reset", "attributes", validate_attribute_names, SandboxUser.reset_attributes),
    ):
        router.add_api_route(
            f"/api/bots/{{bot_id}}/users/{{user_id}}/{path}",
            user_change(field, validate, change),
            methods=["POST"],
            name=path.replace("/", "_"),
        )

    @router.post("/api/bots/{bot_id}/users/{user_id}/messages")
    async def send_message(bot_id: str, user_id: str, request: Request) -> JSONResponse:
        bot = bot_of(bot_id, request)
        message = checked(DynamicMessage.parse, await json_body(request), "body")
        user = sandbox.user(bot, user_id)
        entry = sandbox.send_message(bot, user, message)
        return ok(
            {
                "messenger_user_id": user.messenger_user_id,
                "messages_sent": len(entry.messages),
                "outbox_seq": entry.seq,
            }
        )

    return router
