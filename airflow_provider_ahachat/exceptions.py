"""Errors raised by the AhaChat client. No Airflow import here.

Every error's text is built by this package and never contains the bot token: the client redacts
AhaChat's own messages and never chains the exceptions of ``requests``, whose texts carry the URL.
As a last guard, every error redacts the live tokens from its own text and keeps at most a few KB
of it (:func:`airflow_provider_ahachat.redaction.bounded`).
"""

from __future__ import annotations

from airflow_provider_ahachat.redaction import MAX_KEPT, bounded


class AhaChatError(Exception):
    """
    Base class of every error this provider raises.

    :param message: what went wrong, for a person.
    :param status: the HTTP status AhaChat answered with, if it answered.
    :param api_message: the reason AhaChat gave, from its ``message``, ``result`` or ``error`` field.
    :param outcome_unknown: True when the request may or may not have been processed (a read
        timeout or a 500 after a message was sent). Such a request is not retried unless asked.
    :param meta_code: Meta's error code, when AhaChat passed a Messenger refusal on (10, 100, 551).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        api_message: str | None = None,
        outcome_unknown: bool = False,
        meta_code: int | None = None,
    ) -> None:
        message = bounded(message, limit=4 * MAX_KEPT)
        super().__init__(message)
        self.message = message
        self.status = status
        self.api_message = None if api_message is None else bounded(api_message)
        self.outcome_unknown = outcome_unknown
        self.meta_code = meta_code

    def __reduce__(self) -> tuple[object, ...]:
        # Keep keyword-only state when pickled (Airflow sends exceptions across processes).
        return (_rebuild, (type(self), self.message, self.__dict__.copy()))


def _rebuild(cls: type[AhaChatError], message: str, state: dict[str, object]) -> AhaChatError:
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.__dict__.update(state)
    return err


class AhaChatValidationError(AhaChatError, ValueError):
    """Bad input, found before any request was sent. The text names each field and its rule."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        if len(self.problems) == 1:
            text = self.problems[0]
        else:
            text = f"{len(self.problems)} problems:\n" + "\n".join(f"- {p}" for p in self.problems)
        super().__init__(text)


class AhaChatAPIError(AhaChatError):
    """AhaChat answered with an error, or could not be reached."""


class AhaChatLedgerBusyError(AhaChatError):
    """
    Another run holds the delivery ledger of this task instance (a zombie and its retry, say):
    nothing was sent, so that nobody is messaged twice.

    :param holder: who holds it, as the holder wrote it.
    """

    def __init__(self, message: str, *, holder: str | None = None) -> None:
        super().__init__(message)
        self.holder = holder


class AhaChatInvalidRequestError(AhaChatAPIError):
    """400: AhaChat rejected the input (unknown message tag, malformed message, reserved name)."""


class AhaChatMessageTagRefusedError(AhaChatInvalidRequestError):
    """
    Messenger refused the message's tag (Meta's error 100, ``(#100) Invalid parameter``, to a
    request that carried one): Meta retired ``CONFIRMED_EVENT_UPDATE``, ``POST_PURCHASE_UPDATE``
    and ``ACCOUNT_UPDATE`` on 27 April 2026, and allows ``NON_PROMOTIONAL_SUBSCRIPTION`` only to
    news pages. Every message with the tag is refused alike: never retried.
    """


class AhaChatAuthError(AhaChatAPIError):
    """401 or 403: the token is wrong, or does not belong to this bot."""


class AhaChatNotFoundError(AhaChatAPIError):
    """404: no such bot, user, phone or block."""


#: What Meta allows once a customer's 24-hour window has closed, as errors say it.
OUTSIDE_WINDOW_RULE = (
    "Meta allows a standard message (no tag) only within 24 hours of the customer's last message or "
    "tap on a button; after that, only a person's reply tagged HUMAN_AGENT (within 7 days) or Meta's "
    "utility messages"
)


class AhaChatOutsideWindowError(AhaChatAPIError):
    """
    Messenger will not let the bot message this customer now: they last wrote more than 24 hours
    ago (Meta's error 10, subcode 2018278), or AhaChat answered 422 (outside the window, or
    unsubscribed). Only the customer can open the window again, by writing or tapping a button:
    never retried. A run for many reports such customers as ``outside_window``.
    """


class AhaChatRecipientUnavailableError(AhaChatOutsideWindowError):
    """
    Meta's error 551, ``This person isn't available right now``: the customer blocked the page, or
    cannot receive its messages now. Treated as outside the window: unreachable now, not retried,
    reported as ``outside_window`` in a run for many.
    """


class AhaChatRateLimitError(AhaChatAPIError):
    """
    429: rate limited, and retries did not get through in the time allowed.

    :param retry_after: the seconds AhaChat asked to wait, if it said.
    """

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.retry_after = retry_after


class AhaChatServerError(AhaChatAPIError):
    """5xx: AhaChat or Facebook failed; ``outcome_unknown`` says if the request may have been processed."""


class AhaChatConnectionError(AhaChatAPIError):
    """AhaChat could not be reached, or the connection broke. ``outcome_unknown`` says which."""


class AhaChatTimeoutError(AhaChatConnectionError):
    """AhaChat did not answer in time; the request may or may not have been processed."""


#: Failures that waiting cures: a rate limit, a server error, no connection. A sensor or trigger
#: logs them and checks again at its next interval.
TRANSIENT_ERRORS: tuple[type[AhaChatError], ...] = (
    AhaChatRateLimitError,
    AhaChatServerError,
    AhaChatConnectionError,
)
