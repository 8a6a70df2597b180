"""
When to try a request again: the one place that decides whether, and when. No Airflow import here.

Every sending loop (the synchronous and asyncio clients, the bulk engine's workers through the
synchronous client) is the same few lines around :class:`Retrying`: attempt; on an error, wait
:meth:`Retrying.after` says, or stop with the error it raises.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass

from airflow_provider_ahachat.exceptions import (
    AhaChatConnectionError,
    AhaChatError,
    AhaChatRateLimitError,
    AhaChatServerError,
)
from airflow_provider_ahachat.request import ApiRequest

log = logging.getLogger(__name__)


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
