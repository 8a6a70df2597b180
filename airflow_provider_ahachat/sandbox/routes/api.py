"""
AhaChat's contract under ``/api``, what the provider's client talks to: a route for every endpoint
of the registry (:mod:`airflow_provider_ahachat.registry`), answered by its action's handler.

A handler gets the request as a :class:`Call` (the bot, already authenticated; the customer, looked
up when the handler asks; the query and the body) and returns what the answer carries: its ``data``,
or for the Broadcast API (``answer="chatfuel"`` in the registry, a copy of Chatfuel's) its
``result`` text, refusals in the same shape. It raises :class:`~..world.ApiError` to refuse: a
missing ``ahachat_token`` or no bot's token is 401, a bot that does not exist 404, another bot's
token 403. Two actions that share an endpoint (``send_text`` and ``send_message``) share the
handler of the one the endpoint is named after. Every request to these endpoints goes through the
knobs first (:mod:`..middleware`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from airflow_provider_ahachat.actions import Action
from airflow_provider_ahachat.models import (
    RESERVED_ATTRIBUTE_NAMES,
    DynamicMessage,
    MessageTag,
    validate_attribute_names,
    validate_attributes,
    validate_tags,
)
from airflow_provider_ahachat.registry import ACTIONS
from airflow_provider_ahachat.request import Endpoint
from airflow_provider_ahachat.sandbox.routes.answers import (
    broadcast_ok,
    broadcast_refused,
    json_body,
    json_object,
    ok,
)
from airflow_provider_ahachat.sandbox.state import SandboxState
from airflow_provider_ahachat.sandbox.world import ApiError, Bot, SandboxUser, checked


@dataclass
class Call:
    """
    One request to AhaChat's API, as a handler sees it.

    :param state: the sandbox.
    :param bot: the bot the token opened.
    :param request: the HTTP request (query and body).
    :param by_phone: whether the customer is given by phone (``?phone=``) rather than in the path.
    """

    state: SandboxState
    bot: Bot
    request: Request
    by_phone: bool = False

    def user(self) -> SandboxUser:
        """The customer the request is about: 400 for a malformed ID or phone, 404 if unknown."""
        if self.by_phone:
            return self.state.user_by_phone(self.bot, self.request.query_params.get("phone"))
        return self.state.user(self.bot, self.request.path_params["user_id"])

    async def field(self, name: str, rule: Callable[[Any, str], Any]) -> Any:
        """The body's field ``name`` (the body is a JSON object), checked by ``rule``: 400 if bad."""
        return checked(rule, (await json_object(self.request)).get(name), name)


#: The sandbox's answer to an action's request: the ``data`` (or the Broadcast API's ``result``).
Handler = Callable[[Call], Awaitable[Any]]
#: Every action's handler, by the action's name.
HANDLERS: dict[str, Handler] = {}


def handles(action: str) -> Callable[[Handler], Handler]:
    """Register the decorated function as the sandbox's handler of ``action``."""

    def register(handler: Handler) -> Handler:
        HANDLERS[action] = handler
        return handler

    return register


@handles("check_connection")
async def check_connection(call: Call) -> Any:
    return call.bot.to_json()  # never the token


@handles("find_user")
async def find_user(call: Call) -> Any:
    return call.user().to_json()


#: Broadcast query names that are parameters, not attributes (``phone`` only in the phone form).
_BROADCAST_PARAMETERS = frozenset({"ahachat_token", "ahachat_message_tag", "ahachat_block_name"})


def broadcast_parameters(call: Call) -> tuple[MessageTag | None, str, dict[str, Any]]:
    """
    The message tag (None: none, a standard message), block name and attributes of a Broadcast API
    request.

    A reserved name given twice means an attribute took a reserved name: 400. A message tag AhaChat
    does not list is 400 (one it lists that Meta retired is Messenger's to refuse), a missing block
    name 400, an unknown block 404.
    """
    query = call.request.query_params
    items = query.multi_items()
    repeated = Counter(name for name, _ in items if name in RESERVED_ATTRIBUTE_NAMES)
    for name, times in repeated.items():
        if times > 1:
            raise ApiError(
                400,
                f"attributes.{name}: attribute name {name!r} is reserved by the Broadcast API "
                f"(the query gives it {times} times)",
            )
    raw_tag = query.get("ahachat_message_tag")
    tag = checked(MessageTag.parse, raw_tag, "ahachat_message_tag") if raw_tag else None
    given = {
        name: value
        for name, value in items
        if name not in _BROADCAST_PARAMETERS and not (call.by_phone and name == "phone")
    }
    attributes = checked(
        lambda: validate_attributes(given, "attributes", allow_empty=True, by_phone=call.by_phone)
    )
    block_name = call.state.block(call.bot, query.get("ahachat_block_name"))
    return tag, block_name, attributes


@handles("broadcast_block")
async def broadcast_block(call: Call) -> Any:
    tag, block_name, attributes = broadcast_parameters(call)
    entry = call.state.broadcast(call.bot, call.user(), tag=tag, block_name=block_name, attributes=attributes)
    how = f"with the tag {tag.value}" if tag is not None else "without a tag"
    return (
        f"Block {block_name!r} sent to user {entry.messenger_user_id} {how}: "
        f"{len(entry.messages)} message(s), outbox #{entry.seq}"
    )


def _user_change(
    field: str, rule: Callable[[Any, str], Any], change: Callable[[SandboxUser, Any], None]
) -> Handler:
    """A handler that checks the body's ``field`` and applies it to the customer, who is answered."""

    async def handle(call: Call) -> Any:
        value = await call.field(field, rule)
        user = call.user()
        change(user, value)
        return user.to_json()

    return handle


handles("add_tags")(_user_change("tags", validate_tags, SandboxUser.add_tags))
handles("remove_tags")(_user_change("tags", validate_tags, SandboxUser.remove_tags))
handles("add_attributes")(_user_change("attributes", validate_attributes, SandboxUser.set_attributes))
handles("reset_attributes")(
    _user_change("attributes", validate_attribute_names, SandboxUser.reset_attributes)
)


@handles("send_message")
async def send_message(call: Call) -> Any:
    message = checked(DynamicMessage.parse, await json_body(call.request), "body")
    user = call.user()
    entry = call.state.send_message(call.bot, user, message)
    return {
        "messenger_user_id": user.messenger_user_id,
        "messages_sent": len(entry.messages),
        "outbox_seq": entry.seq,
    }


def handler_for(names: Mapping[str, str]) -> Handler:
    """
    The handler of the first name of ``names`` (an endpoint's name, then its action's) that has one.

    :raises LookupError: naming the action, when none has.
    """
    for name in names.values():
        if name in HANDLERS:
            return HANDLERS[name]
    raise LookupError(
        f"the sandbox has no handler for the action {names['action']!r} (add one in {__name__})"
    )


def _route(action: Action, endpoint: Endpoint, handler: Handler) -> Any:
    """The route of ``endpoint``: the bot authenticated, then the handler, its answer shaped."""
    by_phone = endpoint == action.phone_endpoint

    async def route(request: Request) -> JSONResponse:
        sandbox = request.app.state.sandbox
        try:
            bot = sandbox.bot(request.path_params["bot_id"], request.query_params.get("ahachat_token"))
            answer = await handler(Call(sandbox, bot, request, by_phone=by_phone))
        except ApiError as err:
            if action.answer == "chatfuel":
                return broadcast_refused(err)
            raise
        return broadcast_ok(answer) if action.answer == "chatfuel" else ok(answer)

    return route


def api_router() -> APIRouter:
    """AhaChat's API: a route for every endpoint of the registry, serving the app's state."""
    router = APIRouter()
    served: set[str] = set()
    for action in ACTIONS.values():
        for endpoint in action.endpoints:
            if endpoint.name in served:
                continue  # an endpoint two actions share is served once
            served.add(endpoint.name)
            handler = handler_for({"endpoint": endpoint.name, "action": action.name})
            router.add_api_route(
                endpoint.path,
                _route(action, endpoint, handler),
                methods=[endpoint.method],
                name=endpoint.name,
            )
    return router
