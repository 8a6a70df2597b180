"""
The AhaChat client: runs any action of the registry, sends, retries, reads the answers.

No Airflow import here. The layers, top to bottom:

- :mod:`airflow_provider_ahachat.registry`: every action (endpoint, arguments, validators).
- this module: :class:`AhaChatClient` (synchronous) and :class:`AsyncAhaChatClient` (asyncio) share
  :class:`BaseAhaChatClient`, which holds the settings
  (:class:`~airflow_provider_ahachat.settings.ClientSettings`) and prepares every request; one
  generic :meth:`AhaChatClient.run` runs any action. The answer rules
  (:mod:`~airflow_provider_ahachat.answers`) and the retry rules
  (:mod:`~airflow_provider_ahachat.retry`) are written once, for both.
- :mod:`airflow_provider_ahachat.transport`: moves the bytes (``requests`` or ``httpx``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from airflow_provider_ahachat.actions import BoundAction
from airflow_provider_ahachat.answers import interpret_response
from airflow_provider_ahachat.exceptions import AhaChatError
from airflow_provider_ahachat.models import Recipient, SendResult, validate_user_id
from airflow_provider_ahachat.redaction import bounded, redact, register_secret, scrub
from airflow_provider_ahachat.registry import action as find_action
from airflow_provider_ahachat.request import ApiRequest, build_call
from airflow_provider_ahachat.retry import Retrying, RetryPolicy
from airflow_provider_ahachat.settings import DEFAULT_BASE_URL, ClientSettings
from airflow_provider_ahachat.transport import HttpxTransport, RawAnswer, RequestsTransport

if TYPE_CHECKING:
    import httpx

__all__ = [
    "AhaChatClient",
    "AsyncAhaChatClient",
    "BaseAhaChatClient",
    "ClientSettings",
    "Pacer",
    "RetryPolicy",
    "Retrying",
]


class Pacer(Protocol):
    """
    What a caller of :meth:`AhaChatClient.send` may add around each attempt (the bulk engine's pace).

    ``before_attempt`` waits for the caller's turn (and may raise to abandon the request before it
    is sent); ``after_attempt`` hears each attempt's error, or None on success; ``wait`` sleeps
    between attempts.
    """

    def before_attempt(self) -> None: ...

    def after_attempt(self, error: AhaChatError | None) -> None: ...

    def wait(self, seconds: float) -> None: ...


class _Unpaced:
    """No pace: attempt at once, sleep between attempts."""

    def before_attempt(self) -> None:
        pass

    def after_attempt(self, error: AhaChatError | None) -> None:
        pass

    def wait(self, seconds: float) -> None:
        time.sleep(seconds)


_UNPACED = _Unpaced()

#: An action's arguments other than who it is for, by name.
Arguments = Mapping[str, Any] | None


class BaseAhaChatClient:
    """
    What the synchronous and asyncio clients share: the settings, and preparing every request.

    Give the settings whole (``settings=``, as the hook does), or the arguments of
    :meth:`ClientSettings.of <airflow_provider_ahachat.settings.ClientSettings.of>`, which checks them:
    ``bot_id``, ``token``, ``base_url``, ``connect_timeout``, ``read_timeout``, ``retry``,
    ``endpoints``, ``default_country_code``, ``message_tags`` and ``default_message_tag``.
    """

    def __init__(
        self,
        bot_id: str | int | None = None,
        token: str | None = None,
        base_url: str = DEFAULT_BASE_URL,
        *,
        settings: ClientSettings | None = None,
        **options: Any,
    ) -> None:
        if settings is None:
            settings = ClientSettings.of(bot_id or "", token or "", base_url, **options)
        elif bot_id is not None or token is not None or options:
            raise TypeError("give either the settings or the arguments that make them, not both")
        register_secret(settings.token)
        self.settings = settings
        self.bot_id = settings.bot_id
        self.base_url = settings.base_url
        self.timeout = settings.timeout
        self.retry = settings.retry
        #: Every endpoint's method and path, the connection's corrections applied.
        self.endpoints = settings.endpoints
        self.default_country_code = settings.default_country_code
        #: Which message tags this bot's page may send, and the one a broadcast carries by default.
        self.message_tag_rule = settings.message_tag_rule

    def __repr__(self) -> str:
        return f"{type(self).__name__}(bot_id={self.bot_id!r}, base_url={self.base_url!r})"

    @property
    def token(self) -> str:
        """The Bot Token, for code that must send it (never log or show it)."""
        return self.settings.token

    def redact(self, text: str) -> str:
        """``text`` without this client's token."""
        return redact(text, self.token)

    def bounded(self, text: Any, limit: int) -> str:
        """``text`` as a log line may keep it: without the token, cut to ``limit`` characters."""
        return bounded(text, self.token, limit)

    def _read(self, request: ApiRequest, answer: RawAnswer | AhaChatError) -> tuple[Any, AhaChatError | None]:
        """AhaChat's ``data`` and None, or None and the error, from what the transport brought back."""
        if isinstance(answer, AhaChatError):
            return None, answer
        try:
            data = interpret_response(request, answer.status, answer.body, answer.headers, token=self.token)
        except AhaChatError as err:
            return None, err
        return scrub(data, self.token), None  # an echoing server's token reaches neither XCom nor logs

    @staticmethod
    def _answer(request: ApiRequest, data: Any) -> Any:
        """The data as the action's registry entry reads it (a ``User``, say), or as it is."""
        return data if request.read is None else request.read(request, data)

    @staticmethod
    def _result(request: ApiRequest, data: Any) -> SendResult:
        """What one action did, for XCom."""
        who = request.recipient or Recipient()
        return SendResult(action=request.action, user_id=who.user_id, phone=who.phone, data=data)

    # -- preparing: validate, then build from the registry

    def bind(self, action: str, arguments: Mapping[str, Any] | None = None, /, **more: Any) -> BoundAction:
        """
        The action ``action`` with its shared ``arguments`` validated, ready to build requests.

        :raises AhaChatValidationError: naming each bad argument, or listing the actions there are.
        """
        return find_action(action).bind(
            arguments, checks={"message_tag": self.message_tag_rule.check}, **more
        )

    def address(self, bound: BoundAction, *, user_id: Any = None, phone: Any = None) -> ApiRequest:
        """
        The request of an action already bound (its shared arguments validated) for one customer,
        ``user_id`` or ``phone``, validated; nothing sent. For sending one action to several customers.

        :raises AhaChatValidationError: naming the bad recipient.
        """
        action = bound.action
        if not action.addresses_customer:
            return bound.request(self.bot_id, endpoints=self.endpoints)
        if phone is None and not action.by_phone:  # an action only by ID: an empty ID is not a phone
            user_id = validate_user_id(user_id)
        recipient = Recipient.of(user_id=user_id, phone=phone, country_code=self.default_country_code)
        return bound.request(self.bot_id, recipient, endpoints=self.endpoints)

    def prepare(
        self, action: str, arguments: Arguments = None, *, user_id: Any = None, phone: Any = None
    ) -> ApiRequest:
        """
        The request for ``action`` on one customer (``user_id`` or ``phone``), validated; nothing sent.

        :raises AhaChatValidationError: naming each bad argument.
        """
        return self.address(self.bind(action, arguments), user_id=user_id, phone=phone)

    def prepare_call(
        self, method: Any, path: Any, params: Any = None, json: Any = None, **more: Any
    ) -> ApiRequest:
        """
        A request to any AhaChat path, validated; nothing sent. See :meth:`AhaChatClient.call`.

        :param more: ``sends_message``.
        :raises AhaChatValidationError: for a bad method, path, query or body.
        """
        return build_call(method, path, self.bot_id, params=params, json_body=json, **more)


class AhaChatClient(BaseAhaChatClient):
    """
    A client for one AhaChat bot.

    One :class:`requests.Session` with pooled keep-alive connections serves every call; the client
    is safe to share between threads. Use it as a context manager, or call :meth:`close`. It takes
    the settings of :class:`BaseAhaChatClient`, and:

    :param pool_size: how many keep-alive connections to keep open.
    """

    def __init__(self, *args: Any, pool_size: int = 10, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.transport = RequestsTransport(self.timeout, pool_size)

    def __enter__(self) -> AhaChatClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def pool_size(self) -> int:
        """How many keep-alive connections are kept open."""
        return self.transport.pool_size

    def ensure_pool(self, size: int) -> None:
        """Keep at least ``size`` keep-alive connections, one per thread that sends at once."""
        self.transport.ensure_pool(size)

    def close(self) -> None:
        """Close the pooled connections."""
        self.transport.close()

    # -- sending: the retry loop

    def send(self, request: ApiRequest, *, pacer: Pacer | None = None) -> Any:
        """
        Send a prepared request, retrying as the policy allows; return AhaChat's ``data``, read as
        the action's registry entry says (a ``User`` for ``find_user``).

        :param pacer: waits for a turn before each attempt, and hears each attempt's outcome (the
            bulk engine's shared pace); none by default.
        """
        pace = pacer or _UNPACED
        retrying = self.retry.start(request, announce=pacer is None)
        while True:
            pace.before_attempt()
            data, error = self.attempt(request)
            pace.after_attempt(error)
            if error is None:
                return self._answer(request, data)
            pace.wait(retrying.after(error))

    def attempt(self, request: ApiRequest) -> tuple[Any, AhaChatError | None]:
        """Send ``request`` once; return AhaChat's ``data`` and None, or None and the error."""
        return self._read(request, self.transport.send(request, request.url(self.base_url, self.token)))

    def perform(self, request: ApiRequest) -> SendResult:
        """Send a prepared action and describe what it did."""
        return self._result(request, self.send(request))

    def run(
        self, action: str, arguments: Arguments = None, *, user_id: Any = None, phone: Any = None
    ) -> SendResult:
        """
        Run any action of the registry for one customer (``user_id`` or ``phone``): validate, send,
        and describe what it did. Its ``data`` is AhaChat's answer, read as the registry says.

        .. code-block:: python

            client.run("add_tags", {"tags": ["vip"]}, user_id="3824547807572463")
            user = client.run("find_user", phone="0908 071 111").data  # a User

        :raises AhaChatValidationError: naming each bad argument, before anything is sent.
        """
        return self.perform(self.prepare(action, arguments, user_id=user_id, phone=phone))

    def call(self, method: str, path: str, params: Any = None, json: Any = None, **more: Any) -> Any:
        """
        Call any AhaChat path, for what the provider does not wrap: the token is added, and the
        errors, retries and redaction are those of every action. Returns AhaChat's whole answer
        (its JSON, or its text), the token removed.

        :param method: ``GET``, ``POST``, ``PUT``, ``PATCH`` or ``DELETE``.
        :param path: the path from the root; ``{bot_id}`` is filled with the Bot ID.
        :param params: the query, a mapping or name/value pairs (not the token).
        :param json: the JSON body, if any.
        :param more: ``sends_message``: whether the request may message a customer, so that it is not
            resent when its outcome is unknown; by default, any method but ``GET``.
        :raises AhaChatValidationError: for a bad method, path, query or body, before sending.
        """
        return self.send(self.prepare_call(method, path, params, json, **more))


class AsyncAhaChatClient(BaseAhaChatClient):
    """
    An asyncio client for one AhaChat bot, for triggers and other code on an event loop.

    It prepares requests, reads answers and retries exactly as :class:`AhaChatClient` does (both
    are a :class:`BaseAhaChatClient`, whose settings it takes); only the transport differs
    (:class:`~airflow_provider_ahachat.transport.HttpxTransport`). Use it as an async context
    manager, or await :meth:`aclose`.

    :param transport: an httpx transport underneath, for tests.
    """

    def __init__(self, *args: Any, transport: httpx.AsyncBaseTransport | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.transport = HttpxTransport(self.timeout, transport)

    @classmethod
    def like(cls, client: BaseAhaChatClient, **kwargs: Any) -> AsyncAhaChatClient:
        """An asyncio client with exactly the settings of ``client``."""
        return cls(settings=client.settings, **kwargs)

    async def __aenter__(self) -> AsyncAhaChatClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self.transport.aclose()

    async def send(self, request: ApiRequest) -> Any:
        """Send a prepared request, retrying as the policy allows; return AhaChat's ``data``, read."""
        retrying = self.retry.start(request)
        while True:
            data, error = await self.attempt(request)
            if error is None:
                return self._answer(request, data)
            await asyncio.sleep(retrying.after(error))

    async def attempt(self, request: ApiRequest) -> tuple[Any, AhaChatError | None]:
        """Send ``request`` once; return AhaChat's ``data`` and None, or None and the error."""
        answer = await self.transport.send(request, request.url(self.base_url, self.token))
        return self._read(request, answer)

    async def run(
        self, action: str, arguments: Arguments = None, *, user_id: Any = None, phone: Any = None
    ) -> SendResult:
        """Run any action of the registry for one customer, as :meth:`AhaChatClient.run` does."""
        request = self.prepare(action, arguments, user_id=user_id, phone=phone)
        return self._result(request, await self.send(request))
