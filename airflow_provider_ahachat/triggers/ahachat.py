"""
The trigger behind ``UserSensor(deferrable=True)``: waits in the triggerer for a customer to match.

Importing this module is light (no ``httpx``, no ``requests``, no client): DAG files import the sensor,
and the sensor imports this module only when it defers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_ahachat.conditions import UserConditions, Watch
from airflow_provider_ahachat.exceptions import AhaChatError
from airflow_provider_ahachat.models import Recipient

if TYPE_CHECKING:
    from airflow_provider_ahachat.client import AsyncAhaChatClient

__all__ = ["UserTrigger"]


def next_interval(
    poke_interval: float, checks: int, exponential_backoff: bool, max_wait: float | None
) -> float:
    """
    Seconds to wait after check number ``checks`` (1-based).

    With ``exponential_backoff`` the wait doubles after each check, from ``poke_interval``, up to
    ``max_wait`` if given.
    """
    wait = poke_interval * 2 ** (checks - 1) if exponential_backoff else poke_interval
    if max_wait is not None:
        wait = min(wait, max_wait)
    return max(0.0, wait)


async def _attempt(call: Awaitable[Any]) -> tuple[Any, AhaChatError | None]:
    """The awaited result and None, or None and the AhaChat error it raised."""
    try:
        return await call, None
    except AhaChatError as err:
        return None, err


class UserTrigger(BaseTrigger):
    """
    Poll AhaChat, without blocking the event loop, until a customer matches every condition.

    It yields one event: ``{"status": "success", "user": {...}}`` when the customer matches,
    ``{"status": "timeout", "message": ...}`` once ``deadline`` passes, or ``{"status": "error",
    "error": <error class name>, "message": ..., "http_status": ...}`` on a failure that waiting
    cannot cure (a wrong token, bad input, a missing connection). A customer who does not exist yet,
    rate limits (429), server errors (5xx) and connection failures are logged and checked again at
    the next interval.

    Only the arguments below are stored in the metadata database: the connection's ID, never its
    token. The triggerer reads the connection itself and registers the token with its secret masker.

    :param ahachat_conn_id: the ``ahachat`` connection to use.
    :param user_id: the customer's messenger_user_id; give this or ``phone``.
    :param phone: the customer's phone number; give this or ``user_id``.
    :param attributes: attribute name to wanted value; ``None`` means "set, to anything".
    :param tags: tags the customer must all have.
    :param absent_tags: tags the customer must have none of.
    :param poke_interval: seconds between checks.
    :param exponential_backoff: double the wait after each check.
    :param max_wait: the longest wait between checks, in seconds, with ``exponential_backoff``.
    :param deadline: when to stop waiting and yield a timeout event (timezone-aware); None waits
        until Airflow's own timeout of the deferral.
    """

    def __init__(
        self,
        *,
        ahachat_conn_id: str,
        user_id: str | None = None,
        phone: str | None = None,
        attributes: dict[str, Any] | None = None,
        tags: list[str] | None = None,
        absent_tags: list[str] | None = None,
        poke_interval: float = 60.0,
        exponential_backoff: bool = False,
        max_wait: float | None = None,
        deadline: datetime | None = None,
    ) -> None:
        super().__init__()
        # Validated here too: the stored arguments are rebuilt into a trigger in the triggerer.
        recipient = Recipient.of(user_id=user_id, phone=phone)
        conditions = UserConditions.parse(attributes=attributes, tags=tags, absent_tags=absent_tags)
        if deadline is not None and deadline.tzinfo is None:
            raise ValueError("deadline: must be timezone-aware")
        self.ahachat_conn_id = ahachat_conn_id
        self.user_id = recipient.user_id
        self.phone = recipient.phone
        self.conditions = conditions
        self.poke_interval = float(poke_interval)
        self.exponential_backoff = exponential_backoff
        self.max_wait = None if max_wait is None else float(max_wait)
        self.deadline = deadline

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """The class path and the arguments that rebuild this trigger; no secret among them."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "ahachat_conn_id": self.ahachat_conn_id,
                "user_id": self.user_id,
                "phone": self.phone,
                **self.conditions.to_json(),
                "poke_interval": self.poke_interval,
                "exponential_backoff": self.exponential_backoff,
                "max_wait": self.max_wait,
                "deadline": self.deadline,
            },
        )

    def __repr__(self) -> str:
        who = Recipient(user_id=self.user_id, phone=self.phone).describe()
        return f"<{type(self).__name__} {self.ahachat_conn_id!r} {who}: {self.conditions.describe()}>"

    def _seconds_left(self) -> float | None:
        if self.deadline is None:
            return None
        return (self.deadline - datetime.now(timezone.utc)).total_seconds()

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Check, sleep without blocking, check again; yield one event."""
        who = Recipient(user_id=self.user_id, phone=self.phone)
        try:
            client = await self._client()
        except AhaChatError as err:
            yield self._error_event(err)
            return
        except Exception as err:  # e.g. the connection is not defined in the triggerer
            # Only the class of the error: its text could quote the connection, token included.
            what = type(err).__name__
            message = f"Could not read the connection {self.ahachat_conn_id!r}: {what}"
            yield TriggerEvent({"status": "error", "error": what, "message": message, "http_status": None})
            return
        # The client is closed before the event is yielded: after its one event a trigger may be
        # cancelled at the ``yield`` at any time.
        try:
            event = await self._wait(client, Watch(self.ahachat_conn_id, who, self.conditions))
        except AhaChatError as err:
            event = self._error_event(err)
        finally:
            await client.aclose()
        yield event

    async def _wait(self, client: AsyncAhaChatClient, watch: Watch) -> TriggerEvent:
        request = client.prepare("find_user", user_id=self.user_id, phone=self.phone)
        who = watch.recipient
        checks = 0
        while True:
            checks += 1
            started = time.monotonic()
            event = await self._check(client, request, watch)
            if event is not None:
                return event
            left = self._seconds_left()
            if left is not None and left <= 0:
                return TriggerEvent(
                    {
                        "status": "timeout",
                        "message": f"AhaChat: {who.describe()} did not match ({self.conditions.describe()}) "
                        f"before the sensor's timeout; checked {checks} times",
                    }
                )
            wait = next_interval(self.poke_interval, checks, self.exponential_backoff, self.max_wait)
            wait = max(0.0, wait - (time.monotonic() - started))
            if left is not None:
                wait = min(wait, left)
            await asyncio.sleep(wait)

    async def _client(self) -> AsyncAhaChatClient:
        from airflow_provider_ahachat.hooks.ahachat import AhaChatHook

        # One attempt per check: the trigger checks again at its next interval anyway.
        return await AhaChatHook(ahachat_conn_id=self.ahachat_conn_id, max_retries=0).get_async_client()

    async def _check(self, client: AsyncAhaChatClient, request: Any, watch: Watch) -> TriggerEvent | None:
        """One look at the customer: an event when done, None for "not yet"."""
        user, error = await _attempt(client.send(request))
        look = watch.judge(user, error)
        if look.ask_about_bot:
            watch.bot_checked((await _attempt(client.run("check_connection")))[1])
        if look.warning:
            self.log.warning("%s", look.message)
        else:
            self.log.info("%s", look.message)
        if not look.done or look.user is None:
            return None
        return TriggerEvent({"status": "success", "user": look.user.model_dump(mode="json")})

    @staticmethod
    def _error_event(err: AhaChatError) -> TriggerEvent:
        return TriggerEvent(
            {
                "status": "error",
                "error": type(err).__name__,
                "message": err.message,
                "http_status": err.status,
            }
        )
