"""
One request to AhaChat, ready to send but for the token; the endpoints requests go to. No Airflow import here.

- :class:`Endpoint`: an HTTP method and path with ``{bot_id}`` and ``{user_id}`` placeholders, under
  the name a connection's ``endpoints`` extra corrects it by (:func:`corrected_table`).
- :class:`ApiRequest`: what the client sends and the transports move: method, path, query, body,
  whether it messages someone, who it is for, and how its answer is read.
- :func:`build_call`: a request to any path, for what no action of the registry wraps.

The token is added only when a request is sent (:meth:`ApiRequest.url`).
"""

from __future__ import annotations

import json
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote, urlencode

from airflow_provider_ahachat.exceptions import AhaChatValidationError
from airflow_provider_ahachat.models import Recipient, corrected, php_query_key
from airflow_provider_ahachat.redaction import TOKEN_PARAM

#: The placeholders a path may hold.
PLACEHOLDERS = ("bot_id", "user_id")
#: The methods a path may be called with.
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


@dataclass(frozen=True)
class Endpoint:
    """
    One AhaChat endpoint.

    :param name: its name, by which a connection's ``endpoints`` extra corrects it.
    :param method: the HTTP method.
    :param path: the path, with ``{bot_id}`` and ``{user_id}`` placeholders.
    :param sends_message: True when a request to it makes the bot message a customer; such a request
        whose outcome is unknown is not retried unless the caller asks for it.
    :param documented: True when AhaChat publishes the endpoint; the others are provisional.
    """

    name: str
    method: str
    path: str
    sends_message: bool = False
    documented: bool = False

    def __str__(self) -> str:
        return f"{self.method} {self.path}"

    def corrected(self, value: Any, where: str) -> Endpoint:
        """
        This endpoint with the method and path of ``value``, ``"METHOD /path"``; whether it messages
        someone stays as declared.

        :raises AhaChatValidationError: naming ``where``, for a bad method, path or placeholder.
        """
        if isinstance(value, Endpoint):
            return value
        example = f"e.g. {self}"
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
        used = _placeholders(path, where)
        if ("{user_id}" in self.path) != ("user_id" in used):
            rule = (
                "must hold {user_id}, the customer's"
                if "{user_id}" in self.path
                else "has no user to put in {user_id}"
            )
            raise AhaChatValidationError(f"{where}: {rule} ({example}), got {path!r}")
        return replace(self, method=method.upper(), path=path, documented=False)


def _placeholders(path: str, where: str) -> set[str]:
    """The placeholders ``path`` holds; any but ``{bot_id}`` and ``{user_id}``, as they are, is refused."""
    valid = ", ".join(f"{{{placeholder}}}" for placeholder in PLACEHOLDERS)
    try:
        parts = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(path)]
    except ValueError as err:
        raise AhaChatValidationError(f"{where}: {err} in {path!r}; placeholders are {valid}") from None
    used = set()
    for name, spec, conversion in parts:
        if name is None:
            continue
        if name not in PLACEHOLDERS or spec or conversion:
            shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise AhaChatValidationError(f"{where}: unknown placeholder {shown}; a path may hold {valid}")
        used.add(name)
    return used


def corrected_table(
    table: Mapping[str, Endpoint], overrides: Any = None, field: str = "endpoints"
) -> Mapping[str, Endpoint]:
    """
    ``table`` with some endpoints' method and path corrected, as a connection's extra ``endpoints``
    says: a mapping (or a JSON object string) of endpoint name to ``"METHOD /path"``, e.g.
    ``{"add_tags": "POST /api/bots/{bot_id}/users/{user_id}/tags"}``.

    :raises AhaChatValidationError: for an unknown endpoint name (listing the valid ones), method or
        placeholder, each naming its field.
    """
    shape = ('object of endpoint name to "METHOD /path"', "an endpoint")
    return corrected(
        table, overrides, field, shape, lambda endpoint, value, where: endpoint.corrected(value, where)
    )


#: How an answer's ``data`` becomes what the caller gets (a :class:`~airflow_provider_ahachat.models.User`,
#: say); given the request and the data.
Reader = Callable[["ApiRequest", Any], Any]


@dataclass(frozen=True)
class ApiRequest:
    """
    One request, ready to send but for the token.

    :param action: the name of the endpoint it goes to (``call`` for a generic call).
    :param method: the HTTP method.
    :param path: the path, with its parts percent-encoded.
    :param params: the query parameters other than the token, in order.
    :param json: the JSON body, if any.
    :param sends_message: whether the request makes the bot message a customer.
    :param recipient: who the request is about, if anyone.
    :param whole_answer: answer with the whole JSON AhaChat sent back, not only its ``data``
        (a generic call, which knows no answer shape).
    :param read: how the answer's ``data`` is read, as the action's registry entry says; None
        gives it as it is.
    """

    action: str
    method: str
    path: str
    params: tuple[tuple[str, str], ...] = ()
    json: Any = None
    sends_message: bool = False
    recipient: Recipient | None = None
    whole_answer: bool = False
    read: Reader | None = field(default=None, compare=False, repr=False)

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
    endpoint: Endpoint,
    bot_id: str,
    *,
    user_id: str | None = None,
    params: Sequence[tuple[str, str]] = (),
    json_body: Any = None,
    recipient: Recipient | None = None,
    read: Reader | None = None,
) -> ApiRequest:
    """The request to ``endpoint`` for ``bot_id`` (and ``user_id``, where its path has one)."""
    path = endpoint.path.format(bot_id=quote(bot_id, safe=""), user_id=quote(user_id or "", safe=""))
    return ApiRequest(
        action=endpoint.name,
        method=endpoint.method,
        path=path,
        params=tuple(params),
        json=json_body,
        sends_message=endpoint.sends_message,
        recipient=recipient,
        read=read,
    )


# --------------------------------------------------------------------------- a call to any path

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


def _path_problem(path: Any) -> str | None:
    if not isinstance(path, str) or not path.startswith("/") or path.startswith("//"):
        return f"path: must be a path from the root, such as /api/bots/{{bot_id}}/users, got {path!r}"
    if any(char in path for char in "?#"):
        return f"path: must hold no query or fragment (give the query as params), got {path!r}"
    return None


def _query(params: Any, problems: list[str]) -> list[tuple[str, str]]:
    """A generic call's query as name/value pairs; each problem is added to ``problems``."""
    pairs: list[tuple[str, str]] = []
    items = params.items() if isinstance(params, Mapping) else params or ()
    try:
        for name, value in items:
            for item in value if isinstance(value, list | tuple) else [value]:
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
    return pairs


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
    A request to any AhaChat path, for what the registry does not wrap; the token is added at send
    time, as for every request.

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
    problem = _path_problem(path)
    if problem:
        problems.append(problem)
    pairs = _query(params, problems)
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
