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

import logging
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow_provider_ahachat import __version__
from airflow_provider_ahachat.actions import TOKEN_PARAM, ApiRequest
from airflow_provider_ahachat.exceptions import AhaChatConnectionError, AhaChatError, AhaChatTimeoutError

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


# --------------------------------------------------------------------------- the token stays out of logs

_TOKEN_IN_QUERY = re.compile(rf"({TOKEN_PARAM}=)[^&\s\"'#]+")
REDACTED = "***"

#: The most characters of anything a server sent that the provider keeps (in an error, a log line,
#: a report, a journal, XCom, a trigger event); the rest is cut, and the text says so.
MAX_KEPT = 2000

#: Any run of at least this many characters of a token (its start, its end, a piece of it) is
#: redacted as the whole token is: a server, or a cut, may keep only part of it.
MIN_FRAGMENT = 8

#: In data AhaChat answered (IDs, phones), which the provider passes on, only longer pieces are
#: redacted, so that a run of digits a token happens to share with a user ID never changes that ID.
DATA_FRAGMENT = 16

_live_secrets: set[str] = set()
_patterns: dict[tuple[str, int], re.Pattern[str]] = {}
_registry_lock = threading.Lock()


def register_secret(secret: str | None) -> None:
    """
    Remember ``secret`` (a Bot Token) as live: :func:`redact` and the HTTP libraries' log filter
    then take it out of any text, by value, wherever it appears.
    """
    if secret and len(secret) >= 4:
        with _registry_lock:
            _live_secrets.add(secret)


def _fragment_pattern(secret: str, size: int) -> re.Pattern[str]:
    """Where any :data:`MIN_FRAGMENT` characters of ``secret`` (or of its percent-encoded form) start."""
    pattern = _patterns.get((secret, size))
    if pattern is not None:
        return pattern
    windows = {
        form[i : i + size] for form in {secret, quote(secret, safe="")} for i in range(len(form) - size + 1)
    }
    alternatives = "|".join(re.escape(w) for w in sorted(windows))
    pattern = re.compile(f"(?=(?:{alternatives}))")
    with _registry_lock:
        _patterns[(secret, size)] = pattern
    return pattern


def _redact_fragments(text: str, secret: str, size: int) -> str:
    """``text`` with every run made of pieces of ``secret`` at least :data:`MIN_FRAGMENT` long redacted."""
    if len(secret) < size:
        return text.replace(secret, REDACTED)
    runs: list[list[int]] = []
    for match in _fragment_pattern(secret, size).finditer(text):
        start, end = match.start(), match.start() + size
        if runs and start <= runs[-1][1]:
            runs[-1][1] = max(runs[-1][1], end)
        else:
            runs.append([start, end])
    if not runs:
        return text
    pieces, last = [], 0
    for start, end in runs:
        pieces += [text[last:start], REDACTED]
        last = end
    pieces.append(text[last:])
    return "".join(pieces)


def redact(text: str, secret: str | None = None, *, fragment: int = MIN_FRAGMENT) -> str:
    """
    ``text`` without ``secret``, without any token registered with :func:`register_secret`, and
    without any ``ahachat_token=`` query value. Any piece of a token at least :data:`MIN_FRAGMENT`
    characters long goes too (what is left when something cut it), as does its percent-encoded form.
    """
    with _registry_lock:
        secrets = set(_live_secrets)
    if secret:
        secrets.add(secret)
    for each in sorted(secrets, key=len, reverse=True):
        text = _redact_fragments(text, each, fragment)
    return _TOKEN_IN_QUERY.sub(rf"\g<1>{REDACTED}", text)


def bounded(text: Any, secret: str | None = None, limit: int = MAX_KEPT) -> str:
    """
    ``text`` as the provider may keep it: redacted first, then cut to ``limit`` characters, the cut
    said in the text. Everything a server sent goes through here before it is kept anywhere.
    """
    text = text if isinstance(text, str) else str(text)
    total = len(text)
    # Redact before cutting; a first, generous cut keeps the redaction cheap on a 20 MB body (a
    # token it splits there lies far past the final cut, or is a long fragment, and redacted).
    text = redact(text[: limit * 8], secret)
    if total > limit * 8 or len(text) > limit:
        text = f"{text[:limit]}... [cut: {total} characters in all]"
    return text


def scrub(value: Any, secret: str | None = None) -> Any:
    """``value`` (parsed JSON) with the token taken out of every string in it, keys too."""
    if isinstance(value, str):
        return redact(value, secret, fragment=DATA_FRAGMENT)
    if isinstance(value, Mapping):
        return {scrub(k, secret) if isinstance(k, str) else k: scrub(v, secret) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(item, secret) for item in value]
    return value


class _RedactTokenFilter(logging.Filter):
    """
    HTTP libraries log each request's URL (urllib3 at DEBUG, httpx at INFO) and, at DEBUG, the
    headers and status line of each answer (httpcore): any of them may carry a token. Every record
    of theirs is redacted by value.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a record whose arguments do not fit its format: keep it as it is
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True


_REDACT_FILTER = _RedactTokenFilter()


def redact_logs_of(*logger_names: str) -> None:
    """Take the token out of every record these loggers emit."""
    for name in logger_names:
        logger = logging.getLogger(name)
        if _REDACT_FILTER not in logger.filters:
            logger.addFilter(_REDACT_FILTER)


redact_logs_of(
    "urllib3",
    "urllib3.connectionpool",
    "urllib3.connection",
    "urllib3.response",
    "urllib3.util.retry",
    "requests",
)
redact_logs_of(
    "httpx", "httpcore", "httpcore.connection", "httpcore.http11", "httpcore.http2", "httpcore.proxy"
)


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
