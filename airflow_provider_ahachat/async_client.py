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
from typing import Any

import httpx

from airflow_provider_ahachat.client import (
    DEFAULT_HEADERS,
    AhaChatClient,
    ApiRequest,
    interpret_response,
    redact,
    redact_logs_of,
    user_from_data,
)
from airflow_provider_ahachat.exceptions import (
    AhaChatConnectionError,
    AhaChatError,
    AhaChatTimeoutError,
)
from airflow_provider_ahachat.models import User

log = logging.getLogger(__name__)


redact_logs_of("httpx", "httpcore", "httpcore.connection", "httpcore.http11", "httpcore.http2")


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

    Build it around a synchronous client, whose settings and token it takes. Use it as an async
    context manager, or await :meth:`aclose`.

    :param client: the synchronous client whose settings (bot, token, base URL, timeouts, retry
        policy) and request preparation this client uses; it sends nothing itself.
    :param transport: an httpx transport, for tests.
    """

    def __init__(self, client: AhaChatClient, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.sync = client
        self._token = client.token
        connect, read = client.timeout
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(read, connect=connect),
            headers=dict(DEFAULT_HEADERS),
            transport=transport,
            trust_env=True,
        )

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
        return user_from_data(request, await self.send(request))
