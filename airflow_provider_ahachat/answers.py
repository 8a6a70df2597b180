"""
How AhaChat's answers are read: the data of a success, or the error that fits a failure.
No Airflow import here.

:func:`interpret_response` is the one place that reads an answer, for the synchronous and asyncio
clients alike; :func:`read_user` and :func:`read_bot` are the readers the registry names for the
actions whose answer is a customer or the bot.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any

from airflow_provider_ahachat.exceptions import (
    OUTSIDE_WINDOW_RULE,
    AhaChatAPIError,
    AhaChatAuthError,
    AhaChatInvalidRequestError,
    AhaChatNotFoundError,
    AhaChatOutsideWindowError,
    AhaChatRateLimitError,
    AhaChatServerError,
)
from airflow_provider_ahachat.models import User
from airflow_provider_ahachat.redaction import bounded, redact
from airflow_provider_ahachat.refusals import raise_refusal
from airflow_provider_ahachat.request import ApiRequest

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
        return _success(request, status, payload, body, api_message, token)
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
    raise _failure(
        request, status, f"AhaChat answered {status} to {request.describe()}: {reason}", headers, api_message
    )


def _success(
    request: ApiRequest, status: int, payload: Any, body: str, api_message: str | None, token: str | None
) -> Any:
    """What a 2xx answer gives: its ``data``, its ``result``, or the whole answer for a generic call."""
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


def _failure(
    request: ApiRequest, status: int, text: str, headers: Mapping[str, str], api_message: str | None
) -> AhaChatAPIError:
    """The error a 4xx or 5xx answer means."""
    if status == 429:
        retry_after = parse_retry_after(headers.get("Retry-After"))
        return AhaChatRateLimitError(text, retry_after=retry_after, status=status, api_message=api_message)
    if status >= 500:
        unknown = status not in NOT_PROCESSED_STATUSES
        if unknown and request.sends_message:
            text += "; the outcome is unknown: the message may or may not have been sent"
        return AhaChatServerError(text, status=status, api_message=api_message, outcome_unknown=unknown)
    text += _STATUS_HINTS.get(status, "")
    return _ERRORS_BY_STATUS.get(status, AhaChatAPIError)(text, status=status, api_message=api_message)


# --------------------------------------------------------------------------- readers


def read_user(request: ApiRequest, data: Any) -> User:
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


def read_bot(request: ApiRequest, data: Any) -> dict[str, Any]:
    """What AhaChat says of the bot, from the answer to the connection check (empty if nothing)."""
    return dict(data) if isinstance(data, Mapping) else {}
