"""
The pace of a bulk run: one rate limit shared by every worker, and a 429 that pauses them all.

:class:`RateLimiter` spaces requests evenly; :class:`WorkerPace` is what a worker hands the client
for each request (the client's :class:`~airflow_provider_ahachat.client.Pacer`): wait for the turn,
stop when the run stops, claim the recipient just before the first attempt, and tell the limiter
how each attempt went. No Airflow import here.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable

from airflow_provider_ahachat.exceptions import AhaChatError, AhaChatRateLimitError


class Stopped(Exception):
    """The run was stopped before this request was sent."""


class RateLimiter:
    """
    One pace for every worker: at most ``rate`` requests per second, evenly spaced.

    A 429 pauses every worker until its ``Retry-After`` has passed and lowers the pace by a fifth;
    the pace then climbs back by a hundredth of the limit per success.

    :param rate: requests per second; None or 0 for no limit (429s still pause everyone).
    """

    def __init__(self, rate: float | None) -> None:
        self.limit = float(rate) if rate else 0.0
        self.rate = self.limit
        self._next = time.monotonic()
        self._lock = threading.Lock()
        self.pauses = 0

    def acquire(self, stop: threading.Event | None = None) -> None:
        """Wait for this worker's turn."""
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + (1.0 / self.rate if self.rate > 0 else 0.0)
        wait = slot - time.monotonic()
        if wait > 0:
            if stop is not None:
                stop.wait(wait)
            else:
                time.sleep(wait)

    def slow_down(self, retry_after: float | None) -> None:
        """A 429 came back: pause everyone, and go slower."""
        with self._lock:
            resume = time.monotonic() + (retry_after if retry_after is not None else 1.0)
            if resume > self._next:
                self._next = resume
                self.pauses += 1
            if self.limit > 0:
                self.rate = max(self.limit * 0.1, self.rate * 0.8)

    def succeeded(self) -> None:
        """A request went through: creep back to the configured pace."""
        if self.limit > 0 and self.rate < self.limit:
            with self._lock:
                self.rate = min(self.limit, self.rate + self.limit * 0.01)


class RetryCounter:
    """Retries by cause (``429``, ``503``, ``AhaChatConnectionError``...), counted across workers."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(self, error: AhaChatError) -> None:
        """Count one retry after ``error``."""
        rate_limited = isinstance(error, AhaChatRateLimitError)
        what = "429" if rate_limited else str(error.status or type(error).__name__)
        with self._lock:
            self.counts[what] += 1


class WorkerPace:
    """
    The pace of one request of a worker's, as the client's retry loop asks for it.

    :param limiter: the run's shared rate limiter.
    :param stop: set when the run stops; a request not yet sent is then abandoned (:class:`Stopped`).
    :param retries: where retries are counted.
    :param before_first: called once, right before the first attempt leaves (the ledger's claim).
    """

    def __init__(
        self,
        limiter: RateLimiter,
        stop: threading.Event,
        retries: RetryCounter,
        before_first: Callable[[], None] | None = None,
    ) -> None:
        self.limiter = limiter
        self.stop = stop
        self.retries = retries
        self._before_first = before_first
        #: The error of the latest attempt, if it failed.
        self.last_error: AhaChatError | None = None

    def before_attempt(self) -> None:
        """Wait for the turn; abandon the request if the run stopped meanwhile."""
        self.limiter.acquire(self.stop)
        if self.stop.is_set():
            raise Stopped
        if self._before_first is not None:
            self._before_first()
            self._before_first = None

    def after_attempt(self, error: AhaChatError | None) -> None:
        """Keep the shared pace: a 429 pauses every worker; a success lets the pace climb back."""
        self.last_error = error
        if error is None:
            self.limiter.succeeded()
            return
        if isinstance(error, AhaChatRateLimitError):
            self.limiter.slow_down(error.retry_after)

    def wait(self, seconds: float) -> None:
        """Wait before a retry (counted by its cause), unless the run stops."""
        if self.stop.is_set():
            raise Stopped
        if self.last_error is not None:
            self.retries.add(self.last_error)
        self.stop.wait(seconds)
