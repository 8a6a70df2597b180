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
from typing import Any

from airflow_provider_ahachat.exceptions import AhaChatError, AhaChatRateLimitError


class Stopped(Exception):
    """The run was stopped before this request was sent."""


#: How late a worker may wake for its slot and still send. Waking a few milliseconds late is the
#: scheduler's ordinary noise on a busy machine; a worker that took a new slot each time would leave
#: a hole in the schedule and go to the back of the line, and a busy machine would send well below
#: its limit.
LATE_ENOUGH = 0.02


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
        """Wait for this worker's turn (or until ``stop`` is set)."""
        while True:
            due = self._reserve()
            wait = due - time.monotonic()
            if wait > 0:
                if stop is not None:
                    stop.wait(wait)
                else:
                    time.sleep(wait)
            if (stop is not None and stop.is_set()) or not self._stale(due):
                return

    def _stale(self, due: float) -> bool:
        """
        Whether a slot is too old to use: its worker woke later than :data:`LATE_ENOUGH` allows.

        A stall (a busy machine, a pause of the whole process) wakes every waiting worker late and
        together; were they all to send, the server would see a burst of as many requests as there
        are workers. A late worker takes a new slot instead, so a stall lets through at most the
        slots of ``LATE_ENOUGH`` (one slot, or 20 ms of them) and the rest stay spaced.
        """
        if self.rate <= 0:
            return False
        return time.monotonic() - due > max(1.0 / self.rate, LATE_ENOUGH)

    def _reserve(self) -> float:
        """Take the next slot of the schedule; return when it comes (``time.monotonic()``)."""
        with self._lock:
            slot = max(time.monotonic(), self._next)
            self._next = slot + (1.0 / self.rate if self.rate > 0 else 0.0)
        return slot

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


class PaceUnavailable(AhaChatError):
    """The shared rate limit cannot be reached: nothing more may be sent, or the limit could be passed."""


#: One Redis script keeps the whole schedule of a bot, atomically: the time the next request may go
#: (``tat``), the pace (``rate``, lowered by a 429 and climbing back) and the 429 pauses. Every
#: caller, on every worker, takes its slot from it: requests are spaced ``1 / rate`` apart whoever
#: sends them, so the bot's limit holds however many tasks share it. Redis's own clock is used.
_REDIS_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local limit = tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tat', 'rate')
local tat = tonumber(state[1]) or now
local rate = math.min(tonumber(state[2]) or limit, limit)
local wait = 0
if ARGV[1] == 'acquire' then
  local slot = math.max(now, tat)
  tat = slot + 1 / rate
  wait = slot - now
elseif ARGV[1] == 'pause' then
  local resume = now + tonumber(ARGV[3])
  if resume > tat then
    tat = resume
    redis.call('HINCRBY', KEYS[1], 'pauses', 1)
  end
  rate = math.max(limit * 0.1, rate * 0.8)
else
  rate = math.min(limit, rate + limit * 0.01)
end
redis.call('HSET', KEYS[1], 'tat', tostring(tat), 'rate', tostring(rate))
redis.call('EXPIRE', KEYS[1], 3600)
return {tostring(wait), tostring(rate)}
"""


class RedisRateLimiter(RateLimiter):
    """
    The bot's rate limit shared through Redis by every task, on every worker, that sends for the bot.

    The same interface as :class:`RateLimiter`; the schedule lives in one Redis hash per bot, updated
    by one atomic script, so a 429 seen by one worker pauses them all. If Redis cannot be reached,
    :class:`PaceUnavailable` is raised and the run stops rather than send without the shared limit.

    :param redis: a ``redis.Redis`` client.
    :param key: the Redis key of the bot's schedule (one per AhaChat address and bot).
    :param rate: the bot's requests per second (above 0).
    """

    def __init__(self, redis: Any, key: str, rate: float) -> None:
        super().__init__(rate)
        if self.limit <= 0:
            raise ValueError("rate: a shared limit needs a rate above 0")
        self.redis = redis
        self.key = key
        self._script = redis.register_script(_REDIS_SCRIPT)

    def _call(self, op: str, retry_after: float = 0.0) -> float:
        try:
            wait, rate = self._script(keys=[self.key], args=[op, self.limit, retry_after])
        except Exception as err:  # redis.RedisError and the socket errors under it
            raise PaceUnavailable(
                f"the shared rate limit in Redis cannot be reached ({type(err).__name__}); "
                "nothing more is sent, so that the bot's limit is never passed"
            ) from None
        self.rate = float(rate)
        return float(wait)

    def _reserve(self) -> float:
        """Take the next slot of the bot's shared schedule (Redis's clock; the wait is what counts)."""
        return time.monotonic() + self._call("acquire")

    def slow_down(self, retry_after: float | None) -> None:
        """A 429 came back: pause every sender of the bot, and go slower."""
        self._call("pause", retry_after if retry_after is not None else 1.0)
        self.pauses += 1

    def succeeded(self) -> None:
        """A request went through: let the shared pace climb back, if it was lowered."""
        if self.rate < self.limit:
            self._call("succeeded")
