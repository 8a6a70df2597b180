"""
The registry: every AhaChat action the provider knows, each declared once. No Airflow import here.

An entry says everything about its action: its name; its endpoint (and the one that reaches a
customer by phone, where AhaChat has one); its arguments, with their validators, whether operators
template them, and an example; whether it messages someone; how AhaChat, and so the sandbox,
answers it; and how the client reads the answer. Everything else reads this table:

- the client runs any action by name (``client.run("add_tags", {"tags": [...]}, user_id=...)``);
- each action's operator takes its template fields from the entry's arguments, and
  ``SqlToAhaChatOperator`` takes ``action=`` and that action's arguments;
- the sandbox serves a route for every endpoint, answered by the action's handler;
- the provider info's list of endpoints and the tests that cover every action come from here.

A new action is an entry here, an operator class and a sandbox handler.

Only the Broadcast API is documented by AhaChat; the other paths are PROVISIONAL (see the contract):
when a real path is confirmed, correct it here; until then a connection can correct it (its extra
``endpoints``, read by :func:`endpoint_table`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from airflow_provider_ahachat.actions import Action, Argument, Builder, Parts, phone_query
from airflow_provider_ahachat.answers import read_bot, read_user
from airflow_provider_ahachat.exceptions import AhaChatValidationError
from airflow_provider_ahachat.models import (
    DynamicMessage,
    Recipient,
    attribute_name_problem,
    attribute_query_value,
    validate_attribute_names,
    validate_attributes,
    validate_block_name,
    validate_message_tag,
    validate_tags,
)
from airflow_provider_ahachat.request import Endpoint, corrected_table

# --------------------------------------------------------------------------- how requests are built


def _attributes_body(shared: Mapping[str, Any], own: Mapping[str, Any], who: Recipient | None) -> Parts:
    merged = {**(shared.get("attributes") or {}), **own}
    if not merged:
        raise AhaChatValidationError("attributes: give at least one attribute")
    return (), {"attributes": merged}


def _broadcast_query(shared: Mapping[str, Any], own: Mapping[str, Any], who: Recipient | None) -> Parts:
    # No tag: a standard message, which Messenger delivers only inside the customer's 24-hour window.
    tag = [("ahachat_message_tag", shared["message_tag"])] if shared.get("message_tag") else []
    params = [*tag, ("ahachat_block_name", shared["block_name"]), *phone_query(who)]
    merged = {**(shared.get("attributes") or {}), **own}
    if who is not None and who.phone is not None:  # in the by-phone form, phone is the recipient's
        reasons = {name: attribute_name_problem(name, by_phone=True) for name in merged}
        problems = [f"attributes.{name}: {reason}" for name, reason in reasons.items() if reason]
        if problems:
            raise AhaChatValidationError(problems)
    params += [(name, attribute_query_value(value)) for name, value in merged.items()]
    return params, None


def _json_of(key: str, argument: str) -> Builder:
    """A builder whose body is ``{key: <the argument>}``."""
    return lambda shared, own, who: ((), {key: shared[argument]})


def _body_of(argument: str) -> Builder:
    """A builder whose body is the argument itself."""
    return lambda shared, own, who: ((), shared[argument])


# --------------------------------------------------------------------------- the arguments


def _optional_attributes(value: Any, field: str) -> dict[str, Any]:
    return validate_attributes(value, field, allow_empty=True)


def _text(value: Any, field: str) -> dict[str, Any]:
    return DynamicMessage.text(value, field).to_payload()


def _message(value: Any, field: str) -> dict[str, Any]:
    return DynamicMessage.parse(value, field).to_payload()


def _message_tag(value: Any, field: str) -> str | None:
    return validate_message_tag(value, field)


_TAGS = Argument("tags", validate_tags, example=["vip"])
_MESSAGES = "POST /api/bots/{bot_id}/users/{user_id}/messages"


def _message_action(name: str, argument: str, check: Callable[[Any, str], Any], example: Any) -> Action:
    """An action that sends the message its one argument holds (a text is a one-line message)."""
    renderer = "json" if argument == "message" else None
    return Action(
        name,
        _MESSAGES,
        arguments=(Argument(argument, check, renderer=renderer, example=example),),
        build=_body_of(argument),
        endpoint_name="send_message",
        messages=True,
        marks_with="set_attributes",
    )


# --------------------------------------------------------------------------- the registry

#: Every action, by the name operators, the bulk engine, the SQL transfer and the notifiers use.
ACTIONS: Mapping[str, Action] = MappingProxyType(
    {
        action.name: action
        for action in (
            # Documented: https://ahachat.com Block Broadcast API. All parameters in the query string.
            Action(
                "broadcast_block",
                "POST /api/bots/{bot_id}/users/{user_id}/send",
                endpoint_name="broadcast_by_user",
                phone_route=("broadcast_by_phone", "POST /api/bots/{bot_id}/phones/send"),
                arguments=(
                    Argument("block_name", validate_block_name, example="shipping_update"),
                    Argument("message_tag", _message_tag, required=False),
                    Argument("attributes", _optional_attributes, required=False, renderer="json"),
                ),
                build=_broadcast_query,
                messages=True,
                documented=True,
                takes_attributes=True,
                marks_with="query",
                answer="chatfuel",
            ),
            Action("check_connection", "GET /api/bots/{bot_id}", reads=read_bot),
            Action(
                "find_user",
                "GET /api/bots/{bot_id}/users/{user_id}",
                phone_route=("find_user_by_phone", "GET /api/bots/{bot_id}/users"),
                reads=read_user,
            ),
            Action(
                "add_tags",
                "POST /api/bots/{bot_id}/users/{user_id}/tags",
                arguments=(_TAGS,),
                build=_json_of("tags", "tags"),
            ),
            Action(
                "remove_tags",
                "POST /api/bots/{bot_id}/users/{user_id}/tags/remove",
                arguments=(_TAGS,),
                build=_json_of("tags", "tags"),
            ),
            Action(
                "add_attributes",
                "POST /api/bots/{bot_id}/users/{user_id}/attributes",
                arguments=(
                    Argument(
                        "attributes",
                        _optional_attributes,
                        required=False,
                        renderer="json",
                        example={"ma_don": "DH10231"},
                    ),
                ),
                build=_attributes_body,
                takes_attributes=True,
            ),
            Action(
                "reset_attributes",
                "POST /api/bots/{bot_id}/users/{user_id}/attributes/reset",
                arguments=(
                    Argument("names", validate_attribute_names, aliases=("attributes",), example=["ma_don"]),
                ),
                build=_json_of("attributes", "names"),
            ),
            _message_action("send_text", "text", _text, example="Chào bạn!"),
            _message_action("send_message", "message", _message, example=[{"text": "Đơn hàng #123"}]),
        )
    }
)


def _endpoints() -> Mapping[str, Endpoint]:
    """Every endpoint of the registry, by name; two actions that share one declare it alike."""
    table: dict[str, Endpoint] = {}
    for each in ACTIONS.values():
        for endpoint in each.endpoints:
            if table.setdefault(endpoint.name, endpoint) != endpoint:
                raise ValueError(f"endpoint {endpoint.name!r} is declared twice, differently")
    return MappingProxyType(table)


#: Every endpoint the provider calls, by the name a connection's ``endpoints`` extra corrects it by.
ENDPOINTS: Mapping[str, Endpoint] = _endpoints()

#: The actions that act on customers one at a time, as ``recipients=`` and the SQL transfer run them.
RECIPIENT_ACTIONS: tuple[str, ...] = tuple(
    name for name, each in ACTIONS.items() if each.addresses_customer and each.reads is None
)


def action(name: str) -> Action:
    """
    The action called ``name``.

    :raises AhaChatValidationError: listing the actions there are.
    """
    try:
        return ACTIONS[name]
    except (KeyError, TypeError):
        raise AhaChatValidationError(
            f"action: {name!r} is not an AhaChat action; use one of {', '.join(ACTIONS)}"
        ) from None


def endpoint_table(overrides: Any = None, field: str = "endpoints") -> Mapping[str, Endpoint]:
    """
    :data:`ENDPOINTS` with some endpoints' method and path corrected, as a connection's extra
    ``endpoints`` says: a mapping (or a JSON object string) of endpoint name to ``"METHOD /path"``,
    e.g. ``{"add_tags": "POST /api/bots/{bot_id}/users/{user_id}/tags"}``. Whether an endpoint
    messages a customer stays as the registry says.

    :raises AhaChatValidationError: for an unknown endpoint name (listing the valid ones), method or
        placeholder, each naming its field.
    """
    return corrected_table(ENDPOINTS, overrides, field)
