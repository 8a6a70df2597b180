"""
Transports: they only move bytes. No Airflow import here.

A transport sends one prepared request and hands back the raw answer (status, body as UTF-8 text,
headers); everything about AhaChat's answers and retries lives above it, in the client
(:mod:`airflow_provider_ahachat.client`), once for both. Like ``requests``' adapters under a
``Session``: :class:`RequestsTransport` for synchronous code (operators, the bulk engine) and
:class:`HttpxTransport` for asyncio (triggers).

A failure of the HTTP library becomes one of this package's errors, built outside the ``except``
block: the library's own exception (whose text carries the URL, and so the token) is neither chained
nor kept as context.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from airflow_provider_ahachat import __version__
from airflow_provider_ahachat.exceptions import AhaChatConnectionError, AhaChatError, AhaChatTimeoutError
from airflow_provider_ahachat.request import ApiRequest

if TYPE_CHECKING:
    import httpx
    import requests

#: Sent with every request, whatever the transport.
DEFAULT_HEADERS: Mapping[str, str] = MappingProxyType(
    {"User-Agent": f"airflow-provider-ahachat/{__version__}", "Accept": "application/json"}
)


@dataclass(frozen=True)
class RawAnswer:
    """
    What AhaChat answered, before it is read.

    :param status: the HTTP status.
    :param body: the body, decoded as UTF-8 (the contract's charset, whatever the header says).
    :param headers: the headers.
    """

    status: int
    body: str
    headers: Mapping[str, str]


# --------------------------------------------------------------------------- synchronous: requests


def _unknown_tail(request: ApiRequest) -> str:
    return ": the message may or may not have been sent" if request.sends_message else ""


class RequestsTransport:
    """
    Sends requests through one :class:`requests.Session` with pooled keep-alive connections.

    Safe to share between threads.

    :param timeout: seconds to connect and seconds to wait for an answer.
    :param pool_size: how many keep-alive connections to keep open.
    """

    def __init__(self, timeout: tuple[float, float], pool_size: int = 10) -> None:
        import requests

        self.timeout = timeout
        self._session = requests.Session()
        self._session.headers.update(DEFAULT_HEADERS)
        self.pool_size = 0
        self.ensure_pool(pool_size)

    def ensure_pool(self, size: int) -> None:
        """Keep at least ``size`` keep-alive connections, one per thread that sends at once."""
        if size <= self.pool_size:
            return
        from requests.adapters import HTTPAdapter

        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=size, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self.pool_size = size

    def send(self, request: ApiRequest, url: str) -> RawAnswer | AhaChatError:
        """Send ``request`` to ``url`` once; the answer, or the error that says what failed."""
        import requests

        failure: requests.RequestException | None = None
        try:
            # Never follow a redirect: it would carry the token (in the query) to wherever it points.
            response = self._session.request(
                request.method, url, json=request.json, timeout=self.timeout, allow_redirects=False
            )
        except requests.RequestException as exc:
            failure = exc
        if failure is not None:
            return self._error(request, failure)
        try:
            body = response.content.decode("utf-8", "replace")
            return RawAnswer(response.status_code, body, response.headers)
        finally:
            response.close()

    def _error(self, request: ApiRequest, exc: requests.RequestException) -> AhaChatError:
        import requests
        import urllib3.exceptions

        where = request.describe()
        if isinstance(exc, requests.exceptions.ConnectTimeout):
            return AhaChatConnectionError(
                f"Could not connect to AhaChat within {self.timeout[0]:g}s for {where}"
            )
        if isinstance(exc, requests.exceptions.ReadTimeout):
            return AhaChatTimeoutError(
                f"AhaChat did not answer {where} within {self.timeout[1]:g}s; the outcome is unknown"
                + _unknown_tail(request),
                outcome_unknown=True,
            )
        if isinstance(exc, requests.exceptions.SSLError):  # the handshake failed: nothing was sent
            return AhaChatConnectionError(f"TLS failed while connecting to AhaChat for {where}")
        if isinstance(exc, requests.exceptions.ConnectionError):
            reason = getattr(exc.args[0], "reason", None) if exc.args else None
            if isinstance(reason, urllib3.exceptions.NewConnectionError):
                return AhaChatConnectionError(
                    f"Could not connect to AhaChat for {where}: connection refused or host unknown"
                )
            return AhaChatConnectionError(
                f"The connection to AhaChat broke during {where}; the outcome is unknown"
                + _unknown_tail(request),
                outcome_unknown=True,
            )
        return AhaChatConnectionError(
            f"The request {where} failed: {type(exc).__name__}", outcome_unknown=True
        )

    def close(self) -> None:
        """Close the pooled connections."""
        self._session.close()


# --------------------------------------------------------------------------- asyncio: httpx


class HttpxTransport:
    """
    Sends requests through one :class:`httpx.AsyncClient`, whose waits never block the event loop.

    :param timeout: seconds to connect and seconds to wait for an answer.
    :param transport: an httpx transport underneath, for tests.
    """

    def __init__(
        self, timeout: tuple[float, float], transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        import httpx

        self.timeout = timeout
        connect, read = timeout
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(read, connect=connect),
            headers=dict(DEFAULT_HEADERS),
            transport=transport,
            trust_env=True,
            follow_redirects=False,  # a redirect would carry the token wherever it points
        )

    async def send(self, request: ApiRequest, url: str) -> RawAnswer | AhaChatError:
        """Send ``request`` to ``url`` once; the answer, or the error that says what failed."""
        import httpx

        failure: httpx.HTTPError | None = None
        try:
            response = await self._http.request(request.method, url, json=request.json)
        except httpx.HTTPError as exc:
            failure = exc
        if failure is not None:
            return self._error(request, failure)
        body = response.content.decode("utf-8", "replace")
        return RawAnswer(response.status_code, body, response.headers)

    def _error(self, request: ApiRequest, exc: Any) -> AhaChatError:
        import httpx

        where = request.describe()
        if isinstance(exc, httpx.ConnectTimeout):
            return AhaChatConnectionError(
                f"Could not connect to AhaChat within {self.timeout[0]:g}s for {where}"
            )
        if isinstance(exc, httpx.PoolTimeout):
            return AhaChatConnectionError(f"No free connection to AhaChat for {where}")
        if isinstance(exc, httpx.ReadTimeout | httpx.WriteTimeout):
            return AhaChatTimeoutError(
                f"AhaChat did not answer {where} within {self.timeout[1]:g}s; the outcome is unknown"
                + _unknown_tail(request),
                outcome_unknown=True,
            )
        if isinstance(exc, httpx.ConnectError):  # nothing was sent: refused, unknown host, TLS handshake
            return AhaChatConnectionError(
                f"Could not connect to AhaChat for {where}: connection refused, host unknown or TLS failed"
            )
        return AhaChatConnectionError(
            f"The connection to AhaChat broke during {where} ({type(exc).__name__}); the outcome is unknown"
            + _unknown_tail(request),
            outcome_unknown=True,
        )

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self._http.aclose()
