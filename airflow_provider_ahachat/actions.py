"""
What an action is: its endpoints, its arguments and how a request for one recipient is built.
No Airflow import here, no HTTP library.

Every action the provider knows is declared once, as an :class:`Action` in
:mod:`airflow_provider_ahachat.registry`. An action's shared arguments are validated once
(:meth:`Action.bind`); the bound action then builds the request for each recipient
(:meth:`BoundAction.request`), which validates nothing but the recipient's own attributes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from types import MappingProxyType
from typing import Any

from airflow_provider_ahachat.exceptions import AhaChatValidationError
from airflow_provider_ahachat.models import Recipient
from airflow_provider_ahachat.request import ApiRequest, Endpoint, Reader, build_request

#: What an action's builder returns: the query parameters and the JSON body.
Parts = tuple[Sequence[tuple[str, str]], Any]
#: An action's builder: the query and body for one recipient, from the validated shared arguments,
#: the recipient's own attributes and the recipient.
Builder = Callable[[Mapping[str, Any], Mapping[str, Any], Recipient | None], Parts]

#: How AhaChat answers an action: ``{"success": true, "data": ...}``, or, for the Broadcast API (a
#: copy of Chatfuel's), ``{"success": true, "result": "..."}``.
ANSWER_SHAPES = ("data", "chatfuel")


def phone_query(who: Recipient | None) -> list[tuple[str, str]]:
    """The ``phone`` query parameter of a request that reaches a customer by phone."""
    return [("phone", who.phone)] if who is not None and who.phone is not None else []


def _phone_only(shared: Mapping[str, Any], own: Mapping[str, Any], who: Recipient | None) -> Parts:
    return phone_query(who), None


@dataclass(frozen=True)
class Argument:
    """
    One argument of an action, other than who it is for.

    :param name: the argument's name, as the action's operator and :meth:`Action.bind` take it.
    :param check: validates a value and returns it as the request needs it; given the value and
        the field name to put in errors.
    :param required: whether the argument must be given; an optional one absent is passed on as None.
    :param aliases: other names the argument is accepted under (``attributes`` for ``names``).
    :param templated: whether operators render it with Jinja (a template field).
    :param renderer: how Airflow's UI shows the rendered value (``"json"``), if not as text.
    :param example: a value that works against the sandbox's seed, for the tests that cover every
        action and for the documentation.
    """

    name: str
    check: Callable[[Any, str], Any]
    required: bool = True
    aliases: tuple[str, ...] = ()
    templated: bool = True
    renderer: str | None = None
    example: Any = None

    @property
    def names(self) -> tuple[str, ...]:
        """Every name the argument is accepted under."""
        return (self.name, *self.aliases)


@dataclass(frozen=True)
class Action:
    """
    One action: its endpoints, its arguments, and how a request for one recipient is built.

    :param name: the action's name (``add_tags``, ``broadcast_block``...).
    :param route: the endpoint that reaches a customer by user ID (or the bot itself), as
        ``"METHOD /path"`` with ``{bot_id}`` and ``{user_id}`` placeholders.
    :param arguments: the arguments shared by every recipient.
    :param build: the query and body for one recipient, from the validated shared arguments, the
        recipient's own attributes and the recipient; by default, a ``phone`` query parameter for
        a customer given by phone.
    :param endpoint_name: the name of the endpoint of ``route`` (by which a connection corrects it);
        the action's name by default. Two actions may share an endpoint.
    :param phone_route: the endpoint that reaches a customer by phone, where AhaChat has one, as
        ``(name, "METHOD /path")``; without it, a customer given by phone is looked up first.
    :param messages: whether the action makes the bot message the customer.
    :param documented: whether AhaChat publishes its endpoints; the others are provisional.
    :param takes_attributes: whether a recipient's own columns (beyond ``user_id`` and ``phone``)
        are attributes for this action.
    :param marks_with: how a message of this action also sets an attribute on the customer (a
        bulk run's ``delivery_mark``): ``"query"`` (the Broadcast API saves every extra query
        parameter as an attribute) or ``"set_attributes"`` (a dynamic message's own field); None
        for actions that message nobody.
    :param reads: how the client reads the answer's ``data`` (into a ``User``, say); None gives it
        as AhaChat sent it.
    :param answer: how AhaChat answers it, one of :data:`ANSWER_SHAPES` (the sandbox answers alike).
    """

    name: str
    route: str
    arguments: tuple[Argument, ...] = ()
    build: Builder = _phone_only
    endpoint_name: str | None = None
    phone_route: tuple[str, str] | None = None
    messages: bool = False
    documented: bool = False
    takes_attributes: bool = False
    marks_with: str | None = None
    reads: Reader | None = None
    answer: str = "data"

    def _endpoint(self, name: str, route: str) -> Endpoint:
        method, path = route.split()
        return Endpoint(name, method, path, sends_message=self.messages, documented=self.documented)

    @cached_property
    def endpoint(self) -> Endpoint:
        """The endpoint that reaches a customer by user ID (or the bot itself)."""
        return self._endpoint(self.endpoint_name or self.name, self.route)

    @cached_property
    def phone_endpoint(self) -> Endpoint | None:
        """The endpoint that reaches a customer by phone, if AhaChat has one."""
        return self._endpoint(*self.phone_route) if self.phone_route else None

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """Its endpoints: by user ID (or the bot), then by phone where there is one."""
        return (self.endpoint,) if self.phone_endpoint is None else (self.endpoint, self.phone_endpoint)

    @property
    def sends_message(self) -> bool:
        """Whether the action makes the bot message the customer."""
        return self.messages

    @property
    def addresses_customer(self) -> bool:
        """Whether a request of this action is about one customer (all but the connection check)."""
        return self.phone_route is not None or "{user_id}" in self.endpoint.path

    @property
    def by_phone(self) -> bool:
        """Whether AhaChat can reach a customer by phone for this action, without a lookup."""
        return self.phone_route is not None

    @property
    def argument_names(self) -> tuple[str, ...]:
        """Every name an argument is accepted under, aliases included."""
        return tuple(name for argument in self.arguments for name in argument.names)

    def example(self) -> dict[str, Any]:
        """The arguments' examples, by name: arguments that work against the sandbox's seed."""
        return {arg.name: arg.example for arg in self.arguments if arg.example is not None}

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

        :param checks: validators that replace the registry's for some arguments, by argument name:
            a connection's own rules (its message tags).
        :raises AhaChatValidationError: naming every bad or unknown argument and its rule.
        """
        given = {**(arguments or {}), **more}
        takes = f" (it takes {', '.join(self.argument_names)})" if self.arguments else " (it takes none)"
        problems = [
            f"{name}: not an argument of the action {self.name!r}{takes}"
            for name in sorted(set(given) - set(self.argument_names))
        ]
        validated: dict[str, Any] = {}
        for argument in self.arguments:
            try:
                validated[argument.name] = self._checked(argument, given, checks or {})
            except AhaChatValidationError as err:
                problems.extend(err.problems)
        if problems:
            raise AhaChatValidationError(problems)
        return BoundAction(self, MappingProxyType(validated))

    def _checked(
        self, argument: Argument, given: Mapping[str, Any], checks: Mapping[str, Callable[[Any, str], Any]]
    ) -> Any:
        """One argument's value, validated; given under one of its names, or absent when optional."""
        names = [name for name in argument.names if given.get(name) is not None]
        if len(names) > 1:
            raise AhaChatValidationError(f"{', '.join(names)}: give one of them, they are the same argument")
        if not names and argument.required:
            raise AhaChatValidationError(f"{argument.name}: required by the action {self.name!r}")
        name = names[0] if names else argument.name
        return checks.get(argument.name, argument.check)(given.get(name), name)


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
        endpoints: Mapping[str, Endpoint] | None = None,
        mark: Mapping[str, str] | None = None,
    ) -> ApiRequest:
        """
        The request for ``recipient`` (already validated) and their own validated ``attributes``,
        to the action's endpoint as ``endpoints`` (a connection's corrected table) has it.

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
        endpoint, user_id = self._endpoint(recipient)
        table = endpoints or {}
        return build_request(
            table.get(endpoint.name, endpoint),
            bot_id,
            user_id=user_id,
            params=params,
            json_body=body,
            recipient=recipient,
            read=action.reads,
        )

    def _endpoint(self, recipient: Recipient | None) -> tuple[Endpoint, str | None]:
        """The endpoint that reaches ``recipient``, and the user ID its path takes."""
        action = self.action
        if recipient is not None and recipient.phone is not None:
            if action.phone_endpoint is None:
                raise AhaChatValidationError(
                    f"phone: the action {action.name!r} needs a user_id; look the phone up first"
                )
            return action.phone_endpoint, None
        user_id = recipient.user_id if recipient is not None else None
        if user_id is None and "{user_id}" in action.endpoint.path:
            raise AhaChatValidationError(f"user_id: the action {action.name!r} needs a user_id")
        return action.endpoint, user_id
