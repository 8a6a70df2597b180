"""
An asyncio client for the AhaChat API, for triggers and other code on an event loop. No Airflow import.

It speaks the API exactly as :class:`~airflow_provider_ahachat.client.AhaChatClient` does, because it
asks that client to validate its settings and to prepare every request (``prepare_*``, the endpoint
table, the token kept out of messages), and reads every answer with the same
:func:`~airflow_provider_ahachat.client.interpret_response` and retries with the same
:class:`~airflow_provider_ahachat.client.RetryPolicy`. Only the transport differs: one
:class:`httpx.AsyncClient`, whose waits never block the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

import httpx

from airflow_provider_ahachat import __version__
from airflow_provider_ahachat.client import (
    DEFAULT_BASE_URL,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_READ_TIMEOUT,
    TOKEN_PARAM,
    AhaChatClient,
    ApiRequest,
    RetryPolicy,
    interpret_response,
    redact,
)
from airflow_provider_ahachat.exceptions import (
    AhaChatAPIError,
    AhaChatConnectionError,
    AhaChatError,
    AhaChatNotFoundError,
    AhaChatTimeoutError,
)
from airflow_provider_ahachat.models import MessageTag, SendResult, User

log = logging.getLogger(__name__)


class _RedactTokenFilter(logging.Filter):
    """httpx logs each request's URL at INFO level; the token is in that URL."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if TOKEN_PARAM in message:
            record.msg, record.args = redact(message), ()
        return True


_REDACT_FILTER = _RedactTokenFilter()
for _name in ("httpx", "httpcore", "httpcore.connection", "httpcore.http11", "httpcore.http2"):
    _logger = logging.getLogger(_name)
    if not any(isinstance(existing, _RedactTokenFilter) for existing in _logger.filters):
        _logger.addFilter(_REDACT_FILTER)


def _transport_error(request: ApiRequest, exc: httpx.HTTPError, timeout: tuple[float, float]) -> AhaChatError:
    """Our error for a failure of ``httpx``, whose own text and ``request.url`` carry the token."""
    where = request.describe()
    maybe_sent = ": the message may or may not have been sent" if request.sends_message else ""
    if isinstance(exc, httpx.ConnectTimeout):
        return AhaChatConnectionError(f"Could not connect to AhaChat within {timeout[0]:g}s for {where}")
    if isinstance(exc, httpx.PoolTimeout):
        return AhaChatConnectionError(f"No free connection to AhaChat for {where}")
    if isinstance(exc, httpx.ReadTimeout | httpx.WriteTimeout):
        return AhaChatTimeoutError(
            f"AhaChat did not answer {where} within {timeout[1]:g}s; the outcome is unknown{maybe_sent}",
            outcome_unknown=True,
        )
    if isinstance(exc, httpx.ConnectError):  # nothing was sent: refused, unknown host, TLS handshake
        return AhaChatConnectionError(
            f"Could not connect to AhaChat for {where}: connection refused, host unknown or TLS failed"
        )
    return AhaChatConnectionError(
        f"The connection to AhaChat broke during {where} ({type(exc).__name__}); the outcome is unknown"
        + maybe_sent,
        outcome_unknown=True,
    )


class AsyncAhaChatClient:
    """
    An asyncio client for one AhaChat bot.

    Build it with :meth:`create` (the same arguments as :class:`AhaChatClient`), or around an existing
    synchronous client with its token. Use it as an async context manager, or await :meth:`aclose`.

    :param client: the synchronous client whose settings (bot, base URL, timeouts, retry policy) and
        request preparation this client uses; it sends nothing itself.
    :param token: the Bot Token of ``client``. It is sent in the query string and never logged or shown.
    :param transport: an httpx transport, for tests.
    """

    def __init__(
        self, client: AhaChatClient, token: str, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.sync = client
        self._token = token.strip()
        connect, read = client.timeout
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(read, connect=connect),
            headers={"User-Agent": f"airflow-provider-ahachat/{__version__}", "Accept": "application/json"},
            transport=transport,
            trust_env=True,
        )

    @classmethod
    def create(
        cls,
        bot_id: str | int,
        token: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        retry: RetryPolicy | None = None,
    ) -> AsyncAhaChatClient:
        """Validate the settings as :class:`AhaChatClient` does and build the client."""
        client = AhaChatClient(
            bot_id,
            token,
            base_url,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retry=retry,
            pool_size=1,
        )
        return cls(client, token)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(bot_id={self.bot_id!r}, base_url={self.base_url!r})"

    @property
    def bot_id(self) -> str:
        """The Bot ID."""
        return self.sync.bot_id

    @property
    def base_url(self) -> str:
        """Where AhaChat is."""
        return self.sync.base_url

    async def __aenter__(self) -> AsyncAhaChatClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self._http.aclose()
        self.sync.close()

    def redact(self, text: str) -> str:
        """``text`` without this client's token."""
        return redact(text, self._token)

    # -- sending

    async def send(self, request: ApiRequest) -> Any:
        """Send a prepared request, retrying as the policy allows; return AhaChat's ``data``."""
        policy = self.sync.retry
        started = time.monotonic()
        attempt = 0
        while True:
            data, error = await self._attempt(request)
            if error is None:
                return data
            attempt += 1
            wait = policy.delay(request, error, attempt, time.monotonic() - started)
            if wait is None:
                if attempt > 1:
                    error.message = f"{error.message} (after {attempt} attempts)"
                    error.args = (error.message,)
                raise error
            log.warning(
                "%s; retrying in %.1fs (retry %d of %d)", error.message, wait, attempt, policy.max_retries
            )
            await asyncio.sleep(wait)

    async def _attempt(self, request: ApiRequest) -> tuple[Any, AhaChatError | None]:
        # As in the synchronous client, the failure becomes our own error outside the ``except``
        # block: httpx's exception (its text and its request's URL hold the token) is neither
        # chained nor kept as context.
        failure: httpx.HTTPError | None = None
        try:
            response = await self._http.request(
                request.method, request.url(self.base_url, self._token), json=request.json
            )
        except httpx.HTTPError as exc:
            failure = exc
        if failure is not None:
            return None, _transport_error(request, failure, self.sync.timeout)
        try:
            data = interpret_response(
                request, response.status_code, response.text, response.headers, token=self._token
            )
        except AhaChatError as err:
            return None, err
        return data, None

    # -- the actions

    def prepare_find_user(self, user_id: Any = None, phone: Any = None) -> ApiRequest:
        """The request that finds a user by ``user_id`` or ``phone`` (exactly one)."""
        return self.sync.prepare_find_user(user_id=user_id, phone=phone)

    async def find_user(self, user_id: Any = None, phone: Any = None) -> User:
        """
        Find a user by ``user_id`` or ``phone`` (exactly one).

        :raises AhaChatNotFoundError: when there is no such user.
        """
        return await self.fetch_user(self.prepare_find_user(user_id=user_id, phone=phone))

    async def fetch_user(self, request: ApiRequest) -> User:
        """Send a prepared find-user request and read the user, as :meth:`AhaChatClient.fetch_user` does."""
        data = await self.send(request)
        if isinstance(data, list):  # a phone lookup may answer with a list of users
            if not data:
                who = request.recipient.describe() if request.recipient else "this lookup"
                raise AhaChatNotFoundError(f"AhaChat knows no user with {who}", status=200)
            data = data[0]
        if not isinstance(data, Mapping):
            raise AhaChatAPIError(f"AhaChat answered {request.describe()} without a user")
        return User.model_validate(data)

    def prepare_send_text(self, user_id: Any, text: Any) -> ApiRequest:
        """The request that sends a text message."""
        return self.sync.prepare_send_text(user_id, text)

    def prepare_broadcast_block(
        self,
        block_name: Any,
        *,
        user_id: Any = None,
        phone: Any = None,
        message_tag: MessageTag | str | None = None,
        attributes: Any = None,
    ) -> ApiRequest:
        """The Broadcast API request, exactly as AhaChat documents it."""
        return self.sync.prepare_broadcast_block(
            block_name, user_id=user_id, phone=phone, message_tag=message_tag, attributes=attributes
        )

    async def perform(self, request: ApiRequest) -> SendResult:
        """Send a prepared action and describe what it did."""
        data = await self.send(request)
        who = request.recipient
        return SendResult(
            action=request.action,
            user_id=who.user_id if who else None,
            phone=who.phone if who else None,
            data=data,
        )
