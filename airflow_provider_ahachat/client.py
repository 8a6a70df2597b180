"""
The AhaChat client: prepares requests from the action table, sends them, retries, reads the answers.

No Airflow import here. The layers, top to bottom:

- :mod:`airflow_provider_ahachat.actions`: what each action is (endpoint, arguments, validators).
- this module: :class:`AhaChatClient` (synchronous) and :class:`AsyncAhaChatClient` (asyncio) share
  :class:`BaseAhaChatClient`, which validates the settings and prepares every request; the answer
  rules (:func:`interpret_response`) and the retry rules (:class:`RetryPolicy`, :class:`Retrying`)
  are written once, for both.
- :mod:`airflow_provider_ahachat.transport`: moves the bytes (``requests`` or ``httpx``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from airflow_provider_ahachat.actions import (
    ENDPOINTS,
    TOKEN_PARAM,
    ApiRequest,
    BoundAction,
    Endpoint,
    build_call,
    build_request,
    endpoint_table,
)
from airflow_provider_ahachat.exceptions import (
    OUTSIDE_WINDOW_RULE,
    AhaChatAPIError,
    AhaChatAuthError,
    AhaChatConnectionError,
    AhaChatError,
    AhaChatInvalidRequestError,
    AhaChatNotFoundError,
    AhaChatOutsideWindowError,
    AhaChatRateLimitError,
    AhaChatServerError,
    AhaChatValidationError,
)
from airflow_provider_ahachat.models import (
    DEFAULT_COUNTRY_CODE,
    MessageTag,
    MessageTagRule,
    Recipient,
    SendResult,
    User,
    validate_country_code,
)
from airflow_provider_ahachat.refusals import raise_refusal
from airflow_provider_ahachat.transport import (
    DEFAULT_HEADERS,
    REDACTED,
    HttpxTransport,
    RawAnswer,
    RequestsTransport,
    bounded,
    redact,
    redact_logs_of,
    register_secret,
    scrub,
)

if TYPE_CHECKING:
    import httpx

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_HEADERS",
    "ENDPOINTS",
    "REDACTED",
    "TOKEN_PARAM",
    "AhaChatClient",
    "ApiRequest",
    "AsyncAhaChatClient",
    "BaseAhaChatClient",
    "Endpoint",
    "Pacer",
    "RetryPolicy",
    "Retrying",
    "bounded",
    "build_request",
    "interpret_response",
    "redact",
    "redact_logs_of",
    "user_from_data",
]

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://ahachat.com"
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 30.0


# --------------------------------------------------------------------------- answers and retries

_ERRORS_BY_STATUS: dict[int, type[AhaChatAPIError]] = {
    400: AhaChatInvalidRequestError,
    401: AhaChatAuthError,
    403: AhaChatAuthError,
    404: AhaChatNotFoundError,
    422: AhaChatOutsideWindowError,
}

_TOKEN_HINT = " (check the Bot ID and the Bot Token in the connection; the token can be reset in AhaChat)"
#: What an error's text adds for some statuses, so that a person knows what to do.
_STATUS_HINTS = {
    401: _TOKEN_HINT,
    403: _TOKEN_HINT,
    422: "; the customer cannot be messaged now: they last wrote more than 24 hours ago, or unsubscribed. "
    + OUTSIDE_WINDOW_RULE,
}

#: Statuses after which the request surely was not processed: 503, the service refusing work it
#: cannot take. The contract says any 5xx "may or may not have been processed"; a gateway's 502 or
#: 504 in particular can come after AhaChat did the work, so they are outcome unknown.
NOT_PROCESSED_STATUSES = frozenset({503})


#: The longest ``Retry-After`` read as such (a year); anything longer, or infinite, is cut to it.
_LONGEST_RETRY_AFTER = 365 * 86400.0


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header: a number of seconds or an HTTP date."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if seconds != seconds:  # NaN
        return None
    return min(max(0.0, seconds), _LONGEST_RETRY_AFTER)  # finite: every wait must be one a clock can do


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
            return bounded(str(value).strip(), token)
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
    accepted too and gives ``None``. A generic call (``request.whole_answer``) gives the whole
    answer, its JSON or else its text, the token removed. An answer in Chatfuel's shape,
    ``{"success": true, "result": "..."}``, gives its ``result``. The reason of a failure is read
    from ``message``, ``result`` or ``error``.

    A failure that passes on one of Messenger's refusals (outside the 24-hour window, the person not
    available, a refused message tag), in any shape and at any status, raises the error for it
    (:mod:`airflow_provider_ahachat.refusals`); a 422 says the customer cannot be messaged now.
    """
    payload: Any = None
    if body.strip():
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
    api_message = _answer_reason(payload, token)
    raise_refusal(request, status, payload, body, token=token)  # Messenger's own, whatever the status
    if 200 <= status < 300:
        if isinstance(payload, Mapping) and payload.get("success") is False:
            raise AhaChatAPIError(
                f"AhaChat refused {request.describe()}: {api_message or 'success is false'}",
                status=status,
                api_message=api_message,
            )
        if request.whole_answer:  # a generic call: the whole answer, without the token
            if payload is None:
                return redact(body, token) if body.strip() else None
            return json.loads(redact(json.dumps(payload, ensure_ascii=False), token))
        if not isinstance(payload, Mapping):
            return None
        if "data" in payload:
            return payload["data"]
        result = payload.get("result")
        return redact(result, token) if isinstance(result, str) else result
    if 300 <= status < 400:
        # Never followed (the token would go with it), never success: the address is wrong, or
        # something between here and AhaChat answers in its place.
        where = headers.get("Location")
        raise AhaChatAPIError(
            f"AhaChat answered {status} to {request.describe()}: a redirect"
            + (f" to {bounded(where, token, 200)}" if where else "")
            + "; redirects are not followed, so the token goes only to the connection's address"
            " (check its host and scheme); nothing was done",
            status=status,
            api_message=api_message,
        )
    reason = api_message or (bounded(body.strip(), token) if payload is None else "") or "no message"
    text = f"AhaChat answered {status} to {request.describe()}: {reason}"
    if status == 429:
        retry_after = parse_retry_after(headers.get("Retry-After"))
        raise AhaChatRateLimitError(text, retry_after=retry_after, status=status, api_message=api_message)
    if status >= 500:
        unknown = status not in NOT_PROCESSED_STATUSES
        if unknown and request.sends_message:
            text += "; the outcome is unknown: the message may or may not have been sent"
        raise AhaChatServerError(text, status=status, api_message=api_message, outcome_unknown=unknown)
    text += _STATUS_HINTS.get(status, "")
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

    def start(self, request: ApiRequest, *, announce: bool = True) -> Retrying:
        """The retry state of one request under this policy, from its first attempt."""
        return Retrying(self, request, announce=announce)


class Retrying:
    """
    The retry state of one request: the one place that decides whether, and when, to try again.

    Every sending loop (the synchronous and asyncio clients, the bulk engine's workers through the
    synchronous client) is the same few lines around it: attempt; on an error, wait
    :meth:`after` says, or stop with the error it raises.

    :param policy: the rules.
    :param request: the request being tried.
    :param announce: log each retry as a warning (the bulk engine counts them instead).
    """

    def __init__(self, policy: RetryPolicy, request: ApiRequest, *, announce: bool = True) -> None:
        self.policy = policy
        self.request = request
        self.announce = announce
        self.attempts = 0
        self._started = time.monotonic()

    def after(self, error: AhaChatError) -> float:
        """
        Seconds to wait before trying again after ``error``.

        :raises AhaChatError: ``error`` itself when no retry is allowed, its text saying how many
            attempts were made.
        """
        self.attempts += 1
        wait = self.policy.delay(self.request, error, self.attempts, time.monotonic() - self._started)
        if wait is None:
            if self.attempts > 1:
                error.message = f"{error.message} (after {self.attempts} attempts)"
                error.args = (error.message,)
            raise error
        if self.announce:
            log.warning(
                "%s; retrying in %.1fs (retry %d of %d)",
                error.message,
                wait,
                self.attempts,
                self.policy.max_retries,
            )
        return wait


def user_from_data(request: ApiRequest, data: Any) -> User:
    """The user in the ``data`` of an answer to a find-user request."""
    if isinstance(data, list):  # a phone lookup may answer with a list of users
        who = request.recipient.describe() if request.recipient else "this lookup"
        if not data:
            raise AhaChatNotFoundError(f"AhaChat knows no user with {who}", status=200)
        if len(data) > 1:
            ids = [str(user.get("messenger_user_id")) for user in data if isinstance(user, Mapping)]
            shown = ", ".join(ids[:10]) + (", ..." if len(ids) > 10 else "")
            raise AhaChatAPIError(
                f"AhaChat has {len(data)} users with {who} ({shown}); find the customer by user_id instead",
                status=200,
            )
        data = data[0]
    if not isinstance(data, Mapping):
        raise AhaChatAPIError(f"AhaChat answered {request.describe()} without a user")
    from pydantic import ValidationError

    try:
        return User.model_validate(data)
    except ValidationError as err:  # its text quotes the answer: only the fields and rules are kept
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors()[:5])
        failure = AhaChatAPIError(
            f"AhaChat answered {request.describe()} with a user that cannot be read: {problems}"
        )
    raise failure


# --------------------------------------------------------------------------- the clients


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


class BaseAhaChatClient:
    """
    What the synchronous and asyncio clients share: the settings, and preparing every request.

    :param bot_id: the Bot ID, from the bot's settings in AhaChat.
    :param token: the Bot Token. It is sent in the query string and never logged or shown.
    :param base_url: where AhaChat is; ``https://ahachat.com`` unless testing against the sandbox.
    :param connect_timeout: seconds to wait while opening a connection.
    :param read_timeout: seconds to wait for an answer.
    :param retry: when to retry; see :class:`RetryPolicy`.
    :param endpoints: corrections of the provisional paths, endpoint name to ``"METHOD /path"``
        (a mapping or a JSON object string); see :func:`~airflow_provider_ahachat.actions.endpoint_table`.
    :param default_country_code: the country of phone numbers written without a country code
        (``84``, Vietnam); every phone is sent, compared and recorded in E.164.
    :param message_tags: the message tags the page may use, instead of Meta's rule as of December
        2026 (``HUMAN_AGENT`` only): a list, a JSON list or names separated by commas.
    :param default_message_tag: the tag of a broadcast that names none; none by default (a
        standard message, for customers inside the 24-hour window).
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
        endpoints: Any = None,
        default_country_code: str = DEFAULT_COUNTRY_CODE,
        message_tags: Any = None,
        default_message_tag: Any = None,
    ) -> None:
        if isinstance(bot_id, int):
            bot_id = str(bot_id)
        problems = []
        if not isinstance(bot_id, str) or not bot_id.strip():
            problems.append("bot_id: the Bot ID must not be empty")
        if not isinstance(token, str) or not token.strip():
            problems.append("token: the Bot Token must not be empty")
        try:
            default_country_code = validate_country_code(default_country_code)
        except AhaChatValidationError as err:
            problems.extend(err.problems)
        rule = MessageTagRule()
        try:
            rule = MessageTagRule.of(message_tags, default_message_tag)
        except AhaChatValidationError as err:
            problems.extend(err.problems)
        if problems:
            raise AhaChatValidationError(problems)
        base = base_url.strip().rstrip("/")
        if urlsplit(base).scheme not in ("http", "https") or not urlsplit(base).netloc:
            raise AhaChatValidationError(f"base_url: must be an http or https URL, got {base_url!r}")
        self.bot_id = bot_id.strip()
        self._token = token.strip()
        register_secret(self._token)
        self.base_url = base
        self.timeout = (float(connect_timeout), float(read_timeout))
        self.retry = retry or RetryPolicy()
        #: Every endpoint's method and path, the connection's corrections applied.
        self.endpoints: Mapping[str, Endpoint] = endpoint_table(endpoints)
        self.default_country_code = default_country_code
        #: Which message tags this bot's page may send, and the one a broadcast carries by default.
        self.message_tag_rule = rule

    def __repr__(self) -> str:
        return f"{type(self).__name__}(bot_id={self.bot_id!r}, base_url={self.base_url!r})"

    def redact(self, text: str) -> str:
        """``text`` without this client's token."""
        return redact(text, self._token)

    def _read(self, request: ApiRequest, answer: RawAnswer | AhaChatError) -> tuple[Any, AhaChatError | None]:
        """AhaChat's ``data`` and None, or None and the error, from what the transport brought back."""
        if isinstance(answer, AhaChatError):
            return None, answer
        try:
            data = interpret_response(request, answer.status, answer.body, answer.headers, token=self._token)
        except AhaChatError as err:
            return None, err
        return scrub(data, self._token), None  # an echoing server's token reaches neither XCom nor logs

    # -- preparing: validate, then build from the action table

    def bind(self, action: str, arguments: Mapping[str, Any] | None = None, /, **more: Any) -> BoundAction:
        """
        The action ``action`` with its shared ``arguments`` validated, ready to build requests.

        :raises AhaChatValidationError: naming each bad argument, or listing the actions there are.
        """
        from airflow_provider_ahachat.actions import action as find_action

        return find_action(action).bind(
            arguments, checks={"message_tag": self.message_tag_rule.check}, **more
        )

    def prepare(
        self,
        action: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        user_id: Any = None,
        phone: Any = None,
    ) -> ApiRequest:
        """
        The request for ``action`` on one customer (``user_id`` or ``phone``), validated; nothing sent.

        :raises AhaChatValidationError: naming each bad argument.
        """
        return self.address(self.bind(action, arguments), user_id=user_id, phone=phone)

    def address(self, bound: BoundAction, *, user_id: Any = None, phone: Any = None) -> ApiRequest:
        """
        The request of an action already bound (its shared arguments validated) for one customer,
        ``user_id`` or ``phone``, validated; nothing sent. For sending one action to several customers.

        :raises AhaChatValidationError: naming the bad recipient.
        """
        if not bound.action.addresses_customer:
            return bound.request(self.bot_id, endpoints=self.endpoints)
        recipient = Recipient.of(user_id=user_id, phone=phone, country_code=self.default_country_code)
        return bound.request(self.bot_id, recipient, endpoints=self.endpoints)

    def prepare_check_connection(self) -> ApiRequest:
        """The request that checks the Bot ID and token."""
        return self.prepare("check_connection")

    def prepare_find_user(self, user_id: Any = None, phone: Any = None) -> ApiRequest:
        """The request that finds a user by ``user_id`` or ``phone`` (exactly one)."""
        return self.prepare("find_user", user_id=user_id, phone=phone)

    def prepare_add_tags(self, user_id: Any, tags: Any) -> ApiRequest:
        """The request that adds ``tags`` to a user."""
        return self.prepare("add_tags", {"tags": tags}, user_id=_by_id(user_id))

    def prepare_remove_tags(self, user_id: Any, tags: Any) -> ApiRequest:
        """The request that removes ``tags`` from a user."""
        return self.prepare("remove_tags", {"tags": tags}, user_id=_by_id(user_id))

    def prepare_add_attributes(self, user_id: Any, attributes: Any) -> ApiRequest:
        """The request that sets ``attributes`` on a user."""
        if attributes is None:
            raise AhaChatValidationError("attributes: give at least one attribute")
        return self.prepare("add_attributes", {"attributes": attributes}, user_id=_by_id(user_id))

    def prepare_reset_attributes(self, user_id: Any, names: Any) -> ApiRequest:
        """The request that clears the attributes ``names`` from a user."""
        return self.prepare("reset_attributes", {"attributes": names}, user_id=_by_id(user_id))

    def prepare_send_text(self, user_id: Any, text: Any) -> ApiRequest:
        """The request that sends a text message."""
        return self.prepare("send_text", {"text": text}, user_id=_by_id(user_id))

    def prepare_send_message(self, user_id: Any, message: Any) -> ApiRequest:
        """The request that sends a dynamic message."""
        return self.prepare("send_message", {"message": message}, user_id=_by_id(user_id))

    def prepare_broadcast_block(
        self,
        block_name: Any,
        *,
        user_id: Any = None,
        phone: Any = None,
        message_tag: MessageTag | str | None = None,
        attributes: Any = None,
    ) -> ApiRequest:
        """
        The Broadcast API request, exactly as AhaChat documents it; with no ``message_tag``, the
        connection's ``default_message_tag``, else no tag (a standard message).
        """
        arguments = {"block_name": block_name, "message_tag": message_tag, "attributes": attributes}
        return self.prepare("broadcast_block", arguments, user_id=user_id, phone=phone)

    @property
    def token(self) -> str:
        """The Bot Token, for code that must send it (never log or show it)."""
        return self._token


def _by_id(user_id: Any) -> Any:
    """A user ID for an action that takes only one, validated as such (an empty one is not a phone)."""
    from airflow_provider_ahachat.models import validate_user_id

    return validate_user_id(user_id)


class AhaChatClient(BaseAhaChatClient):
    """
    A client for one AhaChat bot.

    One :class:`requests.Session` with pooled keep-alive connections serves every call; the client
    is safe to share between threads. Use it as a context manager, or call :meth:`close`. It takes
    the parameters of :class:`BaseAhaChatClient` (``bot_id``, ``token``, ``base_url``,
    ``connect_timeout``, ``read_timeout``, ``retry``), and:

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
        Send a prepared request, retrying as the policy allows; return AhaChat's ``data``.

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
                return data
            pace.wait(retrying.after(error))

    def attempt(self, request: ApiRequest) -> tuple[Any, AhaChatError | None]:
        """Send ``request`` once; return AhaChat's ``data`` and None, or None and the error."""
        return self._read(request, self.transport.send(request, request.url(self.base_url, self._token)))

    def perform(self, request: ApiRequest) -> SendResult:
        """Send a prepared action and describe what it did."""
        data = self.send(request)
        who = request.recipient or Recipient()
        return SendResult(action=request.action, user_id=who.user_id, phone=who.phone, data=data)

    def run(
        self,
        action: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        user_id: Any = None,
        phone: Any = None,
    ) -> SendResult:
        """Validate, send and describe ``action`` for one customer."""
        return self.perform(self.prepare(action, arguments, user_id=user_id, phone=phone))

    def call(
        self,
        method: str,
        path: str,
        params: Any = None,
        json: Any = None,
        *,
        sends_message: bool | None = None,
    ) -> Any:
        """
        Call any AhaChat path, for what the provider does not wrap: the token is added, and the
        errors, retries and redaction are those of every action. Returns AhaChat's whole answer
        (its JSON, or its text), the token removed.

        :param method: ``GET``, ``POST``, ``PUT``, ``PATCH`` or ``DELETE``.
        :param path: the path from the root; ``{bot_id}`` is filled with the Bot ID.
        :param params: the query, a mapping or name/value pairs (not the token).
        :param json: the JSON body, if any.
        :param sends_message: whether the request may message a customer, so that it is not resent
            when its outcome is unknown; by default, any method but ``GET``.
        :raises AhaChatValidationError: for a bad method, path, query or body, before sending.
        """
        request = build_call(
            method, path, self.bot_id, params=params, json_body=json, sends_message=sends_message
        )
        return self.send(request)

    # -- the actions

    def check_connection(self) -> dict[str, Any]:
        """Check the Bot ID and token against AhaChat; return what AhaChat says of the bot."""
        data = self.send(self.prepare_check_connection())
        return dict(data) if isinstance(data, Mapping) else {}

    def find_user(self, user_id: Any = None, phone: Any = None) -> User:
        """
        Find a user by ``user_id`` or ``phone`` (exactly one).

        :raises AhaChatNotFoundError: when there is no such user.
        """
        return self.fetch_user(self.prepare_find_user(user_id=user_id, phone=phone))

    def fetch_user(self, request: ApiRequest) -> User:
        """Send a prepared find-user request and read the user from the answer."""
        return user_from_data(request, self.send(request))

    def add_tags(self, user_id: Any, tags: Any) -> SendResult:
        """Add one or more tags to a user."""
        return self.perform(self.prepare_add_tags(user_id, tags))

    def remove_tags(self, user_id: Any, tags: Any) -> SendResult:
        """Remove one or more tags from a user."""
        return self.perform(self.prepare_remove_tags(user_id, tags))

    def add_attributes(self, user_id: Any, attributes: Any) -> SendResult:
        """Set attributes on a user (a mapping or a JSON object string of name to value)."""
        return self.perform(self.prepare_add_attributes(user_id, attributes))

    def reset_attributes(self, user_id: Any, names: Any) -> SendResult:
        """Clear one or more attributes from a user."""
        return self.perform(self.prepare_reset_attributes(user_id, names))

    def send_text(self, user_id: Any, text: Any) -> SendResult:
        """Send a text (at most 2000 characters). Reaches only users who wrote in the last 24 hours."""
        return self.perform(self.prepare_send_text(user_id, text))

    def send_message(self, user_id: Any, message: Any) -> SendResult:
        """
        Send a dynamic message: a :class:`DynamicMessage`, a dict, a list of messages or a JSON string.

        Reaches only users who wrote in the last 24 hours.
        """
        return self.perform(self.prepare_send_message(user_id, message))

    def broadcast_block(self, block_name: Any, **options: Any) -> SendResult:
        """
        Start the block ``block_name`` for one user, by ``user_id`` or ``phone`` (exactly one).

        The options are those of :meth:`prepare_broadcast_block`: ``user_id``, ``phone``,
        ``message_tag`` and ``attributes``. Without a tag the block reaches only customers who wrote
        in the last 24 hours (Messenger's window); ``HUMAN_AGENT`` is a person's reply within 7 days.
        ``attributes`` are saved on the user before the block runs, so the block can use them.
        """
        return self.perform(self.prepare_broadcast_block(block_name, **options))


class AsyncAhaChatClient(BaseAhaChatClient):
    """
    An asyncio client for one AhaChat bot, for triggers and other code on an event loop.

    It prepares requests, reads answers and retries exactly as :class:`AhaChatClient` does (both
    are a :class:`BaseAhaChatClient`, whose parameters it takes); only the transport differs
    (:class:`HttpxTransport`). Use it as an async context manager, or await :meth:`aclose`.

    :param transport: an httpx transport underneath, for tests.
    """

    def __init__(self, *args: Any, transport: httpx.AsyncBaseTransport | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.transport = HttpxTransport(self.timeout, transport)

    @classmethod
    def like(cls, client: BaseAhaChatClient, **kwargs: Any) -> AsyncAhaChatClient:
        """An asyncio client with exactly the settings of ``client``."""
        connect, read = client.timeout
        return cls(
            client.bot_id,
            client.token,
            client.base_url,
            connect_timeout=connect,
            read_timeout=read,
            retry=client.retry,
            endpoints=client.endpoints,
            default_country_code=client.default_country_code,
            message_tags=client.message_tag_rule.allowed,
            default_message_tag=client.message_tag_rule.default,
            **kwargs,
        )

    async def __aenter__(self) -> AsyncAhaChatClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self.transport.aclose()

    async def send(self, request: ApiRequest) -> Any:
        """Send a prepared request, retrying as the policy allows; return AhaChat's ``data``."""
        retrying = self.retry.start(request)
        while True:
            data, error = await self.attempt(request)
            if error is None:
                return data
            await asyncio.sleep(retrying.after(error))

    async def attempt(self, request: ApiRequest) -> tuple[Any, AhaChatError | None]:
        """Send ``request`` once; return AhaChat's ``data`` and None, or None and the error."""
        answer = await self.transport.send(request, request.url(self.base_url, self._token))
        return self._read(request, answer)

    async def check_connection(self) -> dict[str, Any]:
        """Check the Bot ID and token, as :meth:`AhaChatClient.check_connection` does."""
        data = await self.send(self.prepare_check_connection())
        return dict(data) if isinstance(data, Mapping) else {}

    async def find_user(self, user_id: Any = None, phone: Any = None) -> User:
        """
        Find a user by ``user_id`` or ``phone`` (exactly one).

        :raises AhaChatNotFoundError: when there is no such user.
        """
        return await self.fetch_user(self.prepare_find_user(user_id=user_id, phone=phone))

    async def fetch_user(self, request: ApiRequest) -> User:
        """Send a prepared find-user request and read the user, as :meth:`AhaChatClient.fetch_user` does."""
        return user_from_data(request, await self.send(request))
