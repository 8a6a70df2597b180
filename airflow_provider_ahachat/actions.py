"""
Every AhaChat action the provider knows, described once. No Airflow import, no HTTP library.

Two tables live here and nowhere else:

- :data:`ENDPOINTS`: each HTTP endpoint, its method and path, whether a request to it makes the bot
  message a customer, and whether AhaChat documents it. Only the Broadcast API is documented; the
  other paths are provisional, so correcting one is a one-line change here.
- :data:`ACTIONS`: each action as operators, the bulk engine, the SQL transfer and the notifier
  name it (``add_tags``, ``broadcast_block``...), the endpoint it calls (and the one that reaches a
  customer by phone, where AhaChat has one), and its arguments with the validator of each.

An action's shared arguments are validated once (:meth:`Action.bind`); the bound action then builds
the request for each recipient (:meth:`BoundAction.request`), which validates nothing but the
recipient's own attributes. The token is added only when a request is sent.
"""

from __future__ import annotations

import json
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any
from urllib.parse import quote, urlencode

from airflow_provider_ahachat.exceptions import AhaChatValidationError
from airflow_provider_ahachat.models import (
    DynamicMessage,
    Recipient,
    attribute_name_problem,
    attribute_query_value,
    load_json,
    php_query_key,
    validate_attribute_names,
    validate_attributes,
    validate_block_name,
    validate_message_tag,
    validate_tags,
)

TOKEN_PARAM = "ahachat_token"


# --------------------------------------------------------------------------- endpoints


@dataclass(frozen=True)
class Endpoint:
    """
    One AhaChat endpoint.

    :param method: the HTTP method.
    :param path: the path, with ``{bot_id}`` and ``{user_id}`` placeholders.
    :param sends_message: True when the request makes the bot message a customer; such a request
        whose outcome is unknown is not retried unless the caller asks for it.
    :param documented: True when AhaChat publishes the endpoint; the others are provisional.
    """

    method: str
    path: str
    sends_message: bool = False
    documented: bool = False


#: Every path the provider calls, in one place. Only the Broadcast API is documented by AhaChat.
#: The rest are PROVISIONAL (see the contract): when the real paths are confirmed, correct them here.
ENDPOINTS: Mapping[str, Endpoint] = MappingProxyType(
    {
        # Documented: https://ahachat.com Block Broadcast API. All parameters in the query string.
        "broadcast_by_user": Endpoint(
            "POST", "/api/bots/{bot_id}/users/{user_id}/send", sends_message=True, documented=True
        ),
        "broadcast_by_phone": Endpoint(
            "POST", "/api/bots/{bot_id}/phones/send", sends_message=True, documented=True
        ),
        # PROVISIONAL: not published by AhaChat.
        "check_connection": Endpoint("GET", "/api/bots/{bot_id}"),
        "find_user": Endpoint("GET", "/api/bots/{bot_id}/users/{user_id}"),
        "find_user_by_phone": Endpoint("GET", "/api/bots/{bot_id}/users"),
        "add_tags": Endpoint("POST", "/api/bots/{bot_id}/users/{user_id}/tags"),
        "remove_tags": Endpoint("POST", "/api/bots/{bot_id}/users/{user_id}/tags/remove"),
        "add_attributes": Endpoint("POST", "/api/bots/{bot_id}/users/{user_id}/attributes"),
        "reset_attributes": Endpoint("POST", "/api/bots/{bot_id}/users/{user_id}/attributes/reset"),
        "send_message": Endpoint("POST", "/api/bots/{bot_id}/users/{user_id}/messages", sends_message=True),
    }
)


#: The placeholders a path may hold.
PLACEHOLDERS = ("bot_id", "user_id")
#: The methods a corrected path may use.
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def _override(name: str, value: Any, field: str) -> Endpoint:
    """``ENDPOINTS[name]`` with the method and path of ``value``, ``"METHOD /path"``."""
    where = f"{field}.{name}"
    default = ENDPOINTS[name]
    if isinstance(value, Endpoint):
        return value
    example = f"e.g. {default.method} {default.path}"
    if not isinstance(value, str) or len(value.split()) != 2:
        raise AhaChatValidationError(f"{where}: must be a method and a path, {example}; got {value!r}")
    method, path = value.split()
    if method.upper() not in METHODS:
        raise AhaChatValidationError(
            f"{where}: the method must be one of {', '.join(METHODS)}, got {method!r}"
        )
    if not path.startswith("/") or path.startswith("//") or any(char in path for char in "?#"):
        raise AhaChatValidationError(
            f"{where}: the path must start with / and hold no query or fragment ({example}), got {path!r}"
        )
    valid = ", ".join(f"{{{placeholder}}}" for placeholder in PLACEHOLDERS)
    try:
        fields = [
            (field_name, spec, conversion)
            for _, field_name, spec, conversion in string.Formatter().parse(path)
        ]
    except ValueError as err:
        raise AhaChatValidationError(f"{where}: {err} in {path!r}; placeholders are {valid}") from None
    used = set()
    for field_name, spec, conversion in fields:
        if field_name is None:
            continue
        if field_name not in PLACEHOLDERS or spec or conversion:
            shown = (
                "{"
                + field_name
                + (f"!{conversion}" if conversion else "")
                + (f":{spec}" if spec else "")
                + "}"
            )
            raise AhaChatValidationError(f"{where}: unknown placeholder {shown}; a path may hold {valid}")
        used.add(field_name)
    if ("{user_id}" in default.path) != ("user_id" in used):
        rule = (
            "must hold {user_id}, the customer's"
            if "{user_id}" in default.path
            else "has no user to put in {user_id}"
        )
        raise AhaChatValidationError(f"{where}: {rule} ({example}), got {path!r}")
    return replace(default, method=method.upper(), path=path, documented=False)


def endpoint_table(overrides: Any = None, field: str = "endpoints") -> Mapping[str, Endpoint]:
    """
    :data:`ENDPOINTS` with some endpoints' method and path corrected, as a connection's extra
    ``endpoints`` says: a mapping (or a JSON object string) of endpoint name to ``"METHOD /path"``,
    e.g. ``{"add_tags": "POST /api/bots/{bot_id}/users/{user_id}/tags"}``. Whether an endpoint
    messages a customer stays as the table says.

    :raises AhaChatValidationError: for an unknown endpoint name (listing the valid ones), method or
        placeholder, each naming its field.
    """
    overrides = load_json(overrides, field) if overrides != "" else None
    if not overrides:
        return ENDPOINTS
    if not isinstance(overrides, Mapping):
        raise AhaChatValidationError(
            f'{field}: must be an object of endpoint name to "METHOD /path", got {type(overrides).__name__}'
        )
    table = dict(ENDPOINTS)
    problems: list[str] = []
    for name, value in overrides.items():
        if name not in ENDPOINTS:
            problems.append(f"{field}.{name}: not an endpoint; use one of {', '.join(ENDPOINTS)}")
            continue
        try:
            table[name] = _override(name, value, field)
        except AhaChatValidationError as err:
            problems.extend(err.problems)
    if problems:
        raise AhaChatValidationError(problems)
    return MappingProxyType(table)


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class ApiRequest:
    """
    One request, ready to send but for the token.

    :param action: the endpoint's name in :data:`ENDPOINTS`.
    :param method: the HTTP method.
    :param path: the path, with its parts percent-encoded.
    :param params: the query parameters other than the token, in order.
    :param json: the JSON body, if any.
    :param sends_message: whether the request makes the bot message a customer.
    :param recipient: who the request is about, if anyone.
    :param whole_answer: answer with the whole JSON AhaChat sent back, not only its ``data``
        (a generic call, which knows no answer shape).
    """

    action: str
    method: str
    path: str
    params: tuple[tuple[str, str], ...] = ()
    json: Any = None
    sends_message: bool = False
    recipient: Recipient | None = None
    whole_answer: bool = False

    def url(self, base_url: str, token: str) -> str:
        """The full URL, token first as AhaChat documents it. Never log what this returns."""
        query = urlencode(((TOKEN_PARAM, token), *self.params), quote_via=quote)
        return f"{base_url}{self.path}?{query}"

    def describe(self) -> str:
        """``POST /api/bots/1/users/2/tags``: what the request is, without its query."""
        return f"{self.method} {self.path}"

    def preview(self) -> dict[str, Any]:
        """The request as a dry run shows it: method and path, query and body, without the token."""
        shown: dict[str, Any] = {"request": self.describe()}
        if self.params:
            shown["query"] = dict(self.params)
        if self.json is not None:
            shown["json"] = self.json
        return shown


def build_request(
    endpoint: str,
    bot_id: str,
    *,
    user_id: str | None = None,
    params: Sequence[tuple[str, str]] = (),
    json_body: Any = None,
    recipient: Recipient | None = None,
    endpoints: Mapping[str, Endpoint] = ENDPOINTS,
) -> ApiRequest:
    """Build the request to ``endpoint`` (a name in ``endpoints``, by default :data:`ENDPOINTS`)."""
    spec = endpoints[endpoint]
    path = spec.path.format(bot_id=quote(bot_id, safe=""), user_id=quote(user_id or "", safe=""))
    return ApiRequest(
        action=endpoint,
        method=spec.method,
        path=path,
        params=tuple(params),
        json=json_body,
        sends_message=spec.sends_message,
        recipient=recipient,
    )


#: The action name of a generic call (:func:`build_call`).
CALL = "call"
#: Characters kept as they are in a generic call's path; the rest is percent-encoded.
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"


def _query_value(value: Any, field: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise AhaChatValidationError(
        f"{field}: a query value must be text, a number or a boolean, got {type(value).__name__}"
    )


def build_call(
    method: Any,
    path: Any,
    bot_id: str,
    *,
    params: Any = None,
    json_body: Any = None,
    sends_message: bool | None = None,
) -> ApiRequest:
    """
    A request to any AhaChat path, for what the action table does not wrap; the token is added at
    send time, as for every request.

    :param method: ``GET``, ``POST``, ``PUT``, ``PATCH`` or ``DELETE``, any case.
    :param path: the path from the root, e.g. ``/api/bots/{bot_id}/users``; ``{bot_id}`` is filled
        with the connection's Bot ID, and characters outside a URL (spaces, Vietnamese letters) are
        percent-encoded.
    :param bot_id: the Bot ID.
    :param params: the query: a mapping (a list value repeats its name, None leaves it out) or
        name/value pairs. ``ahachat_token`` is refused: the connection adds it.
    :param json_body: the JSON body, if any.
    :param sends_message: whether the request may message a customer, so that a request whose
        outcome is unknown is not resent; by default, any method but ``GET``.
    :raises AhaChatValidationError: naming the field and the rule.
    """
    problems: list[str] = []
    verb = method.strip().upper() if isinstance(method, str) else method
    if verb not in METHODS:
        problems.append(f"method: must be one of {', '.join(METHODS)}, got {method!r}")
    if not isinstance(path, str) or not path.startswith("/") or path.startswith("//"):
        problems.append(
            f"path: must be a path from the root, such as /api/bots/{{bot_id}}/users, got {path!r}"
        )
    elif any(char in path for char in "?#"):
        problems.append(f"path: must hold no query or fragment (give the query as params), got {path!r}")
    pairs: list[tuple[str, str]] = []
    items = params.items() if isinstance(params, Mapping) else params or ()
    try:
        for name, value in items:
            values = value if isinstance(value, list | tuple) else [value]
            for item in values:
                if item is None:
                    continue
                if not isinstance(name, str) or not name:
                    problems.append(f"params: names must be non-empty strings, got {name!r}")
                elif php_query_key(name).lower() == TOKEN_PARAM:
                    problems.append(f"params.{name}: the connection adds the token; do not give it")
                else:
                    pairs.append((name, _query_value(item, f"params.{name}")))
    except AhaChatValidationError as err:
        problems.extend(err.problems)
    except (TypeError, ValueError):
        problems.append(f"params: must be a mapping or name/value pairs, got {type(params).__name__}")
    if json_body is not None:
        try:
            json.dumps(json_body, allow_nan=False)
        except (TypeError, ValueError) as err:
            problems.append(f"json: cannot be sent as JSON ({err})")
    if problems:
        raise AhaChatValidationError(problems)
    encoded = quote(bot_id, safe="").join(quote(part, safe=_PATH_SAFE) for part in path.split("{bot_id}"))
    return ApiRequest(
        action=CALL,
        method=verb,
        path=encoded,
        params=tuple(pairs),
        json=json_body,
        sends_message=verb != "GET" if sends_message is None else bool(sends_message),
        whole_answer=True,
    )


# --------------------------------------------------------------------------- actions

#: What an action's builder returns: the query parameters and the JSON body.
Parts = tuple[Sequence[tuple[str, str]], Any]
#: An action's builder: the query and body for one recipient, from the validated shared arguments,
#: the recipient's own attributes and the recipient.
Builder = Callable[[Mapping[str, Any], Mapping[str, Any], Recipient | None], Parts]


def _phone_query(who: Recipient | None) -> list[tuple[str, str]]:
    """The ``phone`` query parameter of a request that reaches a customer by phone."""
    return [("phone", who.phone)] if who is not None and who.phone is not None else []


@dataclass(frozen=True)
class Argument:
    """
    One argument of an action, other than who it is for.

    :param name: the argument's name, as operators and :meth:`Action.bind` take it.
    :param check: validates a value and returns it as the request needs it; given the value and
        the field name to put in errors.
    :param required: whether the argument must be given; an optional one absent is passed on as None.
    :param aliases: other names the argument is accepted under (``attributes`` for ``names``).
    """

    name: str
    check: Callable[[Any, str], Any]
    required: bool = True
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Action:
    """
    One action: its endpoint, its arguments and how a request for one recipient is built.

    :param name: the action's name (``add_tags``, ``broadcast_block``...).
    :param endpoint: the endpoint that reaches a customer by user ID.
    :param phone_endpoint: the endpoint that reaches a customer by phone, where AhaChat has one;
        without it, a customer given by phone is looked up first.
    :param arguments: the arguments shared by every recipient.
    :param build: the query and body for one recipient, from the validated shared arguments, the
        recipient's own attributes and the recipient; by default, a ``phone`` query parameter for
        a customer given by phone.
    :param takes_attributes: whether a recipient's own columns (beyond ``user_id`` and ``phone``)
        are attributes for this action.
    :param marks_with: how a message of this action also sets an attribute on the customer (a
        bulk run's ``delivery_mark``): ``"query"`` (the Broadcast API saves every extra query
        parameter as an attribute) or ``"set_attributes"`` (a dynamic message's own field); None
        for actions that message nobody.
    """

    name: str
    endpoint: str
    phone_endpoint: str | None = None
    arguments: tuple[Argument, ...] = ()
    build: Builder = lambda shared, own, who: (_phone_query(who), None)
    takes_attributes: bool = False
    marks_with: str | None = None

    @property
    def sends_message(self) -> bool:
        """Whether the action makes the bot message the customer."""
        return ENDPOINTS[self.endpoint].sends_message

    @property
    def addresses_customer(self) -> bool:
        """Whether a request of this action is about one customer (all but the connection check)."""
        return self.phone_endpoint is not None or "{user_id}" in ENDPOINTS[self.endpoint].path

    @property
    def by_phone(self) -> bool:
        """Whether AhaChat can reach a customer by phone for this action, without a lookup."""
        return self.phone_endpoint is not None

    @property
    def argument_names(self) -> tuple[str, ...]:
        """Every name an argument is accepted under, aliases included."""
        return tuple(name for argument in self.arguments for name in (argument.name, *argument.aliases))

    def bind(
        self,
        arguments: Mapping[str, Any] | None = None,
        /,
        *,
        checks: Mapping[str, Callable[[Any, str], Any]] | None = None,
        **more: Any,
    ) -> BoundAction:
        """
        Validate the shared arguments once; return the action ready to build requests.

        :param checks: validators that replace the table's for some arguments, by argument name: a
            connection's own rules (its message tags).
        :raises AhaChatValidationError: naming every bad or unknown argument and its rule.
        """
        given = {**(arguments or {}), **more}
        unknown = sorted(set(given) - set(self.argument_names))
        problems = [
            f"{name}: not an argument of the action {self.name!r}"
            + (f" (it takes {', '.join(self.argument_names)})" if self.arguments else " (it takes none)")
            for name in unknown
        ]
        validated: dict[str, Any] = {}
        for argument in self.arguments:
            names = [name for name in (argument.name, *argument.aliases) if given.get(name) is not None]
            if len(names) > 1:
                problems.append(f"{', '.join(names)}: give one of them, they are the same argument")
                continue
            if not names and argument.required:
                problems.append(f"{argument.name}: required by the action {self.name!r}")
                continue
            name = names[0] if names else argument.name
            check = (checks or {}).get(argument.name, argument.check)
            try:
                validated[argument.name] = check(given.get(name), name)
            except AhaChatValidationError as err:
                problems.extend(err.problems)
        if problems:
            raise AhaChatValidationError(problems)
        return BoundAction(self, MappingProxyType(validated))


@dataclass(frozen=True)
class BoundAction:
    """
    An action with its shared arguments validated: builds the request for each recipient.

    :param action: the action.
    :param arguments: its validated shared arguments.
    """

    action: Action
    arguments: Mapping[str, Any]

    @property
    def name(self) -> str:
        """The action's name."""
        return self.action.name

    def request(
        self,
        bot_id: str,
        recipient: Recipient | None = None,
        attributes: Mapping[str, Any] | None = None,
        *,
        endpoints: Mapping[str, Endpoint] = ENDPOINTS,
        mark: Mapping[str, str] | None = None,
    ) -> ApiRequest:
        """
        The request for ``recipient`` (already validated) and their own validated ``attributes``,
        to the endpoint that ``endpoints`` (a connection's :func:`endpoint_table`) names.

        :param mark: an attribute the message also sets on the customer (``{name: value}``), the
            way the action's ``marks_with`` says.
        :raises AhaChatValidationError: when the action cannot reach this recipient (a phone for an
            action that needs a user ID) or the recipient's attributes do not fit the action.
        """
        action = self.action
        own = attributes or {}
        if mark and action.marks_with == "query":
            own = {**own, **mark}
        params, body = action.build(self.arguments, own, recipient)
        if mark and action.marks_with == "set_attributes" and isinstance(body, Mapping):
            body = {**body, "set_attributes": {**(body.get("set_attributes") or {}), **mark}}
        if recipient is not None and recipient.phone is not None:
            if action.phone_endpoint is None:
                raise AhaChatValidationError(
                    f"phone: the action {action.name!r} needs a user_id; look the phone up first"
                )
            return build_request(
                action.phone_endpoint,
                bot_id,
                params=params,
                json_body=body,
                recipient=recipient,
                endpoints=endpoints,
            )
        user_id = recipient.user_id if recipient is not None else None
        if user_id is None and "{user_id}" in ENDPOINTS[action.endpoint].path:
            raise AhaChatValidationError(f"user_id: the action {action.name!r} needs a user_id")
        return build_request(
            action.endpoint,
            bot_id,
            user_id=user_id,
            params=params,
            json_body=body,
            recipient=recipient,
            endpoints=endpoints,
        )


# --------------------------------------------------------------------------- the actions' arguments


def _tag_argument(value: Any, field: str) -> list[str]:
    return validate_tags(value, field)


def _names_argument(value: Any, field: str) -> list[str]:
    return validate_attribute_names(value, field)


def _optional_attributes(value: Any, field: str) -> dict[str, Any]:
    return validate_attributes(value, field, allow_empty=True)


def _text_argument(value: Any, field: str) -> dict[str, Any]:
    return DynamicMessage.text(value, field).to_payload()


def _message_argument(value: Any, field: str) -> dict[str, Any]:
    return DynamicMessage.parse(value, field).to_payload()


def _message_tag(value: Any, field: str) -> str | None:
    return validate_message_tag(value, field)


def _attributes_body(shared: Mapping[str, Any], own: Mapping[str, Any], who: Recipient | None) -> Parts:
    merged = {**(shared.get("attributes") or {}), **own}
    if not merged:
        raise AhaChatValidationError("attributes: give at least one attribute")
    return (), {"attributes": merged}


def _broadcast_query(shared: Mapping[str, Any], own: Mapping[str, Any], who: Recipient | None) -> Parts:
    # No tag: a standard message, which Messenger delivers only inside the customer's 24-hour window.
    tag = [("ahachat_message_tag", shared["message_tag"])] if shared.get("message_tag") else []
    params = [*tag, ("ahachat_block_name", shared["block_name"])]
    params += _phone_query(who)
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


_TAGS = (Argument("tags", _tag_argument),)


def _message_action(name: str, argument: str, check: Callable[[Any, str], Any]) -> Action:
    """An action that sends the message its one argument holds (a text is a one-line message)."""
    return Action(
        name,
        "send_message",
        arguments=(Argument(argument, check),),
        build=_body_of(argument),
        marks_with="set_attributes",
    )


#: Every action, by the name operators, the bulk engine, the SQL transfer and the notifier use.
ACTIONS: Mapping[str, Action] = MappingProxyType(
    {
        action.name: action
        for action in (
            Action("check_connection", "check_connection"),
            Action("find_user", "find_user", phone_endpoint="find_user_by_phone"),
            Action(
                "broadcast_block",
                "broadcast_by_user",
                phone_endpoint="broadcast_by_phone",
                arguments=(
                    Argument("block_name", validate_block_name),
                    Argument("message_tag", _message_tag, required=False),
                    Argument("attributes", _optional_attributes, required=False),
                ),
                build=_broadcast_query,
                takes_attributes=True,
                marks_with="query",
            ),
            Action("add_tags", "add_tags", arguments=_TAGS, build=_json_of("tags", "tags")),
            Action("remove_tags", "remove_tags", arguments=_TAGS, build=_json_of("tags", "tags")),
            Action(
                "add_attributes",
                "add_attributes",
                arguments=(Argument("attributes", _optional_attributes, required=False),),
                build=_attributes_body,
                takes_attributes=True,
            ),
            Action(
                "reset_attributes",
                "reset_attributes",
                arguments=(Argument("names", _names_argument, aliases=("attributes",)),),
                build=_json_of("attributes", "names"),
            ),
            _message_action("send_text", "text", _text_argument),
            _message_action("send_message", "message", _message_argument),
        )
    }
)

#: The actions that act on customers one at a time, as ``recipients=`` and the SQL transfer run them.
RECIPIENT_ACTIONS: tuple[str, ...] = tuple(
    name for name in ACTIONS if name not in ("check_connection", "find_user")
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
