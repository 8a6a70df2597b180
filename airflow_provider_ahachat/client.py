"""
A plain-Python client for the AhaChat API. No Airflow import here.

This module is the only code that knows AhaChat's URLs, query names and answer shapes. Each action
is split in two: ``prepare_*`` validates the input and builds an :class:`ApiRequest` without sending
anything (the token is added only at send time), and the action itself sends it. The request
building (:func:`build_request`), the answer handling (:func:`interpret_response`) and the retry
rules (:class:`RetryPolicy`) are plain functions so that any transport, synchronous or not, speaks
the API the same way.
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from types import MappingProxyType
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter

from airflow_provider_ahachat import __version__
from airflow_provider_ahachat.exceptions import (
    AhaChatAPIError,
    AhaChatAuthError,
    AhaChatConnectionError,
    AhaChatError,
    AhaChatInvalidRequestError,
    AhaChatNotFoundError,
    AhaChatOutsideWindowError,
    AhaChatRateLimitError,
    AhaChatServerError,
    AhaChatTimeoutError,
    AhaChatValidationError,
)
from airflow_provider_ahachat.models import (
    DynamicMessage,
    MessageTag,
    Recipient,
    SendResult,
    User,
    attribute_query_value,
    validate_attribute_names,
    validate_attributes,
    validate_block_name,
    validate_tags,
    validate_user_id,
)

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://ahachat.com"
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 30.0
TOKEN_PARAM = "ahachat_token"
#: Sent with every request, whatever the transport.
DEFAULT_HEADERS: Mapping[str, str] = MappingProxyType(
    {"User-Agent": f"airflow-provider-ahachat/{__version__}", "Accept": "application/json"}
)


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


# --------------------------------------------------------------------------- the token stays secret

_TOKEN_IN_QUERY = re.compile(rf"({TOKEN_PARAM}=)[^&\s\"'#]+")
REDACTED = "***"


def redact(text: str, secret: str | None = None) -> str:
    """Remove ``secret`` and any ``ahachat_token=`` query value from ``text``."""
    if secret:
        text = text.replace(secret, REDACTED)
        encoded = quote(secret, safe="")
        if encoded != secret:
            text = text.replace(encoded, REDACTED)
    return _TOKEN_IN_QUERY.sub(rf"\g<1>{REDACTED}", text)


class _RedactTokenFilter(logging.Filter):
    """HTTP libraries log each request's URL (urllib3 at DEBUG, httpx at INFO); the token is in it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if TOKEN_PARAM in message:
            record.msg, record.args = redact(message), ()
        return True


_REDACT_FILTER = _RedactTokenFilter()


def redact_logs_of(*logger_names: str) -> None:
    """Take the token out of every record these loggers emit."""
    for name in logger_names:
        logger = logging.getLogger(name)
        if _REDACT_FILTER not in logger.filters:
            logger.addFilter(_REDACT_FILTER)


redact_logs_of("urllib3.connectionpool", "urllib3.util.retry", "requests")


# --------------------------------------------------------------------------- requests and answers


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
    """

    action: str
    method: str
    path: str
    params: tuple[tuple[str, str], ...] = ()
    json: Any = None
    sends_message: bool = False
    recipient: Recipient | None = None

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
    action: str,
    bot_id: str,
    *,
    user_id: str | None = None,
    params: Sequence[tuple[str, str]] = (),
    json_body: Any = None,
    recipient: Recipient | None = None,
) -> ApiRequest:
    """Build the request for ``action`` from the endpoint table."""
    endpoint = ENDPOINTS[action]
    path = endpoint.path.format(bot_id=quote(bot_id, safe=""), user_id=quote(user_id or "", safe=""))
    return ApiRequest(
        action=action,
        method=endpoint.method,
        path=path,
        params=tuple(params),
        json=json_body,
        sends_message=endpoint.sends_message,
        recipient=recipient,
    )


_ERRORS_BY_STATUS: dict[int, type[AhaChatAPIError]] = {
    400: AhaChatInvalidRequestError,
    401: AhaChatAuthError,
    403: AhaChatAuthError,
    404: AhaChatNotFoundError,
    422: AhaChatOutsideWindowError,
}

#: Statuses after which the request surely was not processed: 503, the service refusing work it
#: cannot take. The contract says any 5xx "may or may not have been processed"; a gateway's 502 or
#: 504 in particular can come after AhaChat did the work, so they are outcome unknown.
NOT_PROCESSED_STATUSES = frozenset({503})


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header: a number of seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError):
        return None


def _answer_reason(payload: Any, token: str | None) -> str | None:
    """
    The reason an answer gives, redacted: AhaChat's ``message``, or ``result`` as Chatfuel's
    Broadcasting API (which AhaChat's copies) answers ``{"success": false, "result": "..."}``, or
    ``error`` (a text, or an object with its own ``message``).
    """
    if not isinstance(payload, Mapping):
        return None
    for key in ("message", "result", "error"):
        value = payload.get(key)
        if isinstance(value, Mapping):
            value = value.get("message") or json.dumps(value, ensure_ascii=False)
        if value is not None and not isinstance(value, bool) and str(value).strip():
            return redact(str(value).strip(), token)
    return None


def interpret_response(
    request: ApiRequest,
    status: int,
    body: str,
    headers: Mapping[str, str],
    *,
    token: str | None = None,
) -> Any:
    """
    Turn an answer into its ``data``, or raise the error that fits its status.

    Any 2xx is accepted unless its JSON says ``"success": false``, which is a failure with the
    answer's reason; the Broadcast API's answer is not documented, so a 2xx without JSON is
    accepted too and gives ``None``. An answer in Chatfuel's shape, ``{"success": true, "result":
    "..."}``, gives its ``result``. The reason of a failure is read from ``message``, ``result``
    or ``error``.
    """
    payload: Any = None
    if body.strip():
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
    api_message = _answer_reason(payload, token)
    if 200 <= status < 300:
        if isinstance(payload, Mapping) and payload.get("success") is False:
            raise AhaChatAPIError(
                f"AhaChat refused {request.describe()}: {api_message or 'success is false'}",
                status=status,
                api_message=api_message,
            )
        if not isinstance(payload, Mapping):
            return None
        if "data" in payload:
            return payload["data"]
        result = payload.get("result")
        return redact(result, token) if isinstance(result, str) else result
    reason = api_message or (redact(body.strip()[:200], token) if payload is None else "") or "no message"
    text = f"AhaChat answered {status} to {request.describe()}: {reason}"
    if status == 429:
        retry_after = parse_retry_after(headers.get("Retry-After"))
        raise AhaChatRateLimitError(text, retry_after=retry_after, status=status, api_message=api_message)
    if status >= 500:
        unknown = status not in NOT_PROCESSED_STATUSES
        if unknown and request.sends_message:
            text += "; the outcome is unknown: the message may or may not have been sent"
        raise AhaChatServerError(text, status=status, api_message=api_message, outcome_unknown=unknown)
    if status in (401, 403):
        text += " (check the Bot ID and the Bot Token in the connection; the token can be reset in AhaChat)"
    error_class = _ERRORS_BY_STATUS.get(status, AhaChatAPIError)
    raise error_class(text, status=status, api_message=api_message)


@dataclass(frozen=True)
class RetryPolicy:
    """
    When to try a request again.

    Rate limits (429) wait for ``Retry-After``; requests that surely were not processed (connection
    refused, 503) back off exponentially with jitter. A request whose outcome is unknown
    (read timeout, 500, a connection broken after sending) is retried only if it does not message
    anyone, or if ``retry_unknown_outcome`` is set.

    :param max_retries: retries after the first attempt.
    :param max_retry_time: seconds after the first attempt past which no retry starts.
    :param backoff_base: the first backoff, in seconds; it doubles with each retry.
    :param backoff_max: the longest single backoff, in seconds.
    :param retry_unknown_outcome: also retry message-sending requests whose outcome is unknown,
        at the risk of sending twice.
    """

    max_retries: int = 5
    max_retry_time: float = 120.0
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    retry_unknown_outcome: bool = False

    def delay(self, request: ApiRequest, error: AhaChatError, attempt: int, elapsed: float) -> float | None:
        """Seconds to wait before retry number ``attempt`` (1-based), or None not to retry."""
        if attempt > self.max_retries or not self.retryable(request, error):
            return None
        wait = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
        wait = wait / 2 + random.uniform(0, wait / 2)
        if isinstance(error, AhaChatRateLimitError) and error.retry_after is not None:
            wait = error.retry_after + random.uniform(0, min(1.0, self.backoff_base))
        if elapsed + wait > self.max_retry_time:
            return None
        return wait

    def retryable(self, request: ApiRequest, error: AhaChatError) -> bool:
        """Whether ``error`` may be retried for ``request`` at all."""
        if isinstance(error, AhaChatRateLimitError):
            return True
        if not isinstance(error, AhaChatServerError | AhaChatConnectionError):
            return False
        if error.outcome_unknown:
            return self.retry_unknown_outcome or not request.sends_message
        return True


def user_from_data(request: ApiRequest, data: Any) -> User:
    """The user in the ``data`` of an answer to a find-user request."""
    if isinstance(data, list):  # a phone lookup may answer with a list of users
        if not data:
            who = request.recipient.describe() if request.recipient else "this lookup"
            raise AhaChatNotFoundError(f"AhaChat knows no user with {who}", status=200)
        data = data[0]
    if not isinstance(data, Mapping):
        raise AhaChatAPIError(f"AhaChat answered {request.describe()} without a user")
    return User.model_validate(data)


# --------------------------------------------------------------------------- the client


def _transport_error(
    request: ApiRequest, exc: requests.RequestException, timeout: tuple[float, float]
) -> AhaChatError:
    """Our error for a failure of ``requests``, whose own text carries the URL and so the token."""
    where = request.describe()
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return AhaChatConnectionError(f"Could not connect to AhaChat within {timeout[0]:g}s for {where}")
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return AhaChatTimeoutError(
            f"AhaChat did not answer {where} within {timeout[1]:g}s; the outcome is unknown"
            + (": the message may or may not have been sent" if request.sends_message else ""),
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
            + (": the message may or may not have been sent" if request.sends_message else ""),
            outcome_unknown=True,
        )
    return AhaChatConnectionError(f"The request {where} failed: {type(exc).__name__}", outcome_unknown=True)


class AhaChatClient:
    """
    A client for one AhaChat bot.

    One :class:`requests.Session` with pooled keep-alive connections serves every call; the client
    is safe to share between threads. Use it as a context manager, or call :meth:`close`.

    :param bot_id: the Bot ID, from the bot's settings in AhaChat.
    :param token: the Bot Token. It is sent in the query string and never logged or shown.
    :param base_url: where AhaChat is; ``https://ahachat.com`` unless testing against the sandbox.
    :param connect_timeout: seconds to wait while opening a connection.
    :param read_timeout: seconds to wait for an answer.
    :param retry: when to retry; see :class:`RetryPolicy`.
    :param pool_size: how many keep-alive connections to keep open.
    """

    def __init__(
        self,
        bot_id: str | int,
        token: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        retry: RetryPolicy | None = None,
        pool_size: int = 10,
    ) -> None:
        if isinstance(bot_id, int):
            bot_id = str(bot_id)
        problems = []
        if not isinstance(bot_id, str) or not bot_id.strip():
            problems.append("bot_id: the Bot ID must not be empty")
        if not isinstance(token, str) or not token.strip():
            problems.append("token: the Bot Token must not be empty")
        if problems:
            raise AhaChatValidationError(problems)
        base = base_url.strip().rstrip("/")
        if urlsplit(base).scheme not in ("http", "https") or not urlsplit(base).netloc:
            raise AhaChatValidationError(f"base_url: must be an http or https URL, got {base_url!r}")
        self.bot_id = bot_id.strip()
        self._token = token.strip()
        self.base_url = base
        self.timeout = (float(connect_timeout), float(read_timeout))
        self.retry = retry or RetryPolicy()
        self._session = requests.Session()
        self._session.headers.update(DEFAULT_HEADERS)
        self.pool_size = 0
        self.ensure_pool(pool_size)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(bot_id={self.bot_id!r}, base_url={self.base_url!r})"

    def __enter__(self) -> AhaChatClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def ensure_pool(self, size: int) -> None:
        """Keep at least ``size`` keep-alive connections, one per thread that sends at once."""
        if size <= self.pool_size:
            return
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=size, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self.pool_size = size

    def close(self) -> None:
        """Close the pooled connections."""
        self._session.close()

    def redact(self, text: str) -> str:
        """``text`` without this client's token."""
        return redact(text, self._token)

    # -- sending

    def send(self, request: ApiRequest) -> Any:
        """Send a prepared request, retrying as the policy allows; return AhaChat's ``data``."""
        started = time.monotonic()
        attempt = 0
        while True:
            data, error = self.attempt(request)
            if error is None:
                return data
            attempt += 1
            wait = self.retry.delay(request, error, attempt, time.monotonic() - started)
            if wait is None:
                if attempt > 1:
                    error.message = f"{error.message} (after {attempt} attempts)"
                    error.args = (error.message,)
                raise error
            log.warning(
                "%s; retrying in %.1fs (retry %d of %d)", error.message, wait, attempt, self.retry.max_retries
            )
            time.sleep(wait)

    def attempt(self, request: ApiRequest) -> tuple[Any, AhaChatError | None]:
        """Send ``request`` once; return AhaChat's ``data`` and None, or None and the error."""
        # The failure is turned into our own error outside the ``except`` block, so that the
        # exception of ``requests`` (whose text holds the URL and the token) is neither chained
        # nor kept as context.
        failure: requests.RequestException | None = None
        try:
            response = self._session.request(
                request.method,
                request.url(self.base_url, self._token),
                json=request.json,
                timeout=self.timeout,
            )
        except requests.RequestException as exc:
            failure = exc
        if failure is not None:
            return None, _transport_error(request, failure, self.timeout)
        try:
            data = interpret_response(
                # UTF-8, as the contract says, whatever charset (or none) the Content-Type names.
                request,
                response.status_code,
                response.content.decode("utf-8", "replace"),
                response.headers,
                token=self._token,
            )
        except AhaChatError as err:
            return None, err
        finally:
            response.close()
        return data, None

    # -- the actions: prepare_* validates and builds, the action sends

    def _user_request(self, action: str, user_id: Any, json_body: Any = None) -> ApiRequest:
        uid = validate_user_id(user_id)
        return build_request(
            action, self.bot_id, user_id=uid, json_body=json_body, recipient=Recipient(user_id=uid)
        )

    def prepare_check_connection(self) -> ApiRequest:
        """The request that checks the Bot ID and token."""
        return build_request("check_connection", self.bot_id)

    def check_connection(self) -> dict[str, Any]:
        """Check the Bot ID and token against AhaChat; return what AhaChat says of the bot."""
        data = self.send(self.prepare_check_connection())
        return dict(data) if isinstance(data, Mapping) else {}

    def prepare_find_user(self, user_id: Any = None, phone: Any = None) -> ApiRequest:
        """The request that finds a user by ``user_id`` or ``phone`` (exactly one)."""
        who = Recipient.of(user_id=user_id, phone=phone)
        if who.user_id is not None:
            return self._user_request("find_user", who.user_id)
        assert who.phone is not None
        return build_request("find_user_by_phone", self.bot_id, params=[("phone", who.phone)], recipient=who)

    def find_user(self, user_id: Any = None, phone: Any = None) -> User:
        """
        Find a user by ``user_id`` or ``phone`` (exactly one).

        :raises AhaChatNotFoundError: when there is no such user.
        """
        return self.fetch_user(self.prepare_find_user(user_id=user_id, phone=phone))

    def fetch_user(self, request: ApiRequest) -> User:
        """Send a prepared find-user request and read the user from the answer."""
        return user_from_data(request, self.send(request))

    def prepare_add_tags(self, user_id: Any, tags: Any) -> ApiRequest:
        """The request that adds ``tags`` to a user."""
        return self._user_request("add_tags", user_id, {"tags": validate_tags(tags)})

    def add_tags(self, user_id: Any, tags: Any) -> SendResult:
        """Add one or more tags to a user."""
        return self.perform(self.prepare_add_tags(user_id, tags))

    def prepare_remove_tags(self, user_id: Any, tags: Any) -> ApiRequest:
        """The request that removes ``tags`` from a user."""
        return self._user_request("remove_tags", user_id, {"tags": validate_tags(tags)})

    def remove_tags(self, user_id: Any, tags: Any) -> SendResult:
        """Remove one or more tags from a user."""
        return self.perform(self.prepare_remove_tags(user_id, tags))

    def prepare_add_attributes(self, user_id: Any, attributes: Any) -> ApiRequest:
        """The request that sets ``attributes`` on a user."""
        return self._user_request("add_attributes", user_id, {"attributes": validate_attributes(attributes)})

    def add_attributes(self, user_id: Any, attributes: Any) -> SendResult:
        """Set attributes on a user (a mapping or a JSON object string of name to value)."""
        return self.perform(self.prepare_add_attributes(user_id, attributes))

    def prepare_reset_attributes(self, user_id: Any, names: Any) -> ApiRequest:
        """The request that clears the attributes ``names`` from a user."""
        return self._user_request(
            "reset_attributes", user_id, {"attributes": validate_attribute_names(names)}
        )

    def reset_attributes(self, user_id: Any, names: Any) -> SendResult:
        """Clear one or more attributes from a user."""
        return self.perform(self.prepare_reset_attributes(user_id, names))

    def prepare_send_text(self, user_id: Any, text: Any) -> ApiRequest:
        """The request that sends a text message."""
        return self._user_request("send_message", user_id, DynamicMessage.text(text).to_payload())

    def send_text(self, user_id: Any, text: Any) -> SendResult:
        """Send a text (at most 2000 characters). Reaches only users who wrote in the last 24 hours."""
        return self.perform(self.prepare_send_text(user_id, text))

    def prepare_send_message(self, user_id: Any, message: Any) -> ApiRequest:
        """The request that sends a dynamic message."""
        return self._user_request("send_message", user_id, DynamicMessage.parse(message).to_payload())

    def send_message(self, user_id: Any, message: Any) -> SendResult:
        """
        Send a dynamic message: a :class:`DynamicMessage`, a dict, a list of messages or a JSON string.

        Reaches only users who wrote in the last 24 hours.
        """
        return self.perform(self.prepare_send_message(user_id, message))

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
        who = Recipient.of(user_id=user_id, phone=phone)
        params: list[tuple[str, str]] = [
            ("ahachat_message_tag", MessageTag.parse(message_tag).value),
            ("ahachat_block_name", validate_block_name(block_name)),
        ]
        if who.phone is not None:
            params.append(("phone", who.phone))
        attributes = validate_attributes(attributes, allow_empty=True, by_phone=who.phone is not None)
        for name, value in attributes.items():
            params.append((name, attribute_query_value(value)))
        action = "broadcast_by_user" if who.user_id is not None else "broadcast_by_phone"
        return build_request(action, self.bot_id, user_id=who.user_id, params=params, recipient=who)

    def broadcast_block(
        self,
        block_name: Any,
        *,
        user_id: Any = None,
        phone: Any = None,
        message_tag: MessageTag | str | None = None,
        attributes: Any = None,
    ) -> SendResult:
        """
        Start the block ``block_name`` for one user, by ``user_id`` or ``phone`` (exactly one).

        The message tag lets the block reach users outside the 24-hour window. ``attributes`` are
        saved on the user before the block runs, so the block can use them.
        """
        request = self.prepare_broadcast_block(
            block_name, user_id=user_id, phone=phone, message_tag=message_tag, attributes=attributes
        )
        return self.perform(request)

    def perform(self, request: ApiRequest) -> SendResult:
        """Send a prepared action and describe what it did."""
        data = self.send(request)
        who = request.recipient or Recipient()
        return SendResult(action=request.action, user_id=who.user_id, phone=who.phone, data=data)

    @property
    def token(self) -> str:
        """The Bot Token, for a transport of this client's (never log or show it)."""
        return self._token
