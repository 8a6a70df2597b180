"""
The receiver's answers with held messages: a customer's call answered with the event's
acknowledgement, then the messages held for them (:mod:`airflow_provider_ahachat.held`).

Any call of a connection's webhook carries them, whatever its event, and so does
``POST /ahachat/webhooks/<conn_id>/_held``, which records no event and needs no DAG. Each delivery
is recorded, after the answer has gone, as an event on ``ahachat_event("held_delivered")`` (who,
which messages, when; never their text), so that a DAG can follow up.

A call that carries an idempotency key and comes again (AhaChat retries after a timeout) is
answered with what its first answer carried, delivering nothing more. No Airflow import: the
function that reaches the store and the one that records events are given.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from starlette.background import BackgroundTask

from airflow_provider_ahachat.events import event_uri
from airflow_provider_ahachat.exceptions import AhaChatValidationError
from airflow_provider_ahachat.held.answer import ANSWER_KEYS, answer_keys, build_answer
from airflow_provider_ahachat.held.delivery import DELIVERED_EVENT, delivered_extra
from airflow_provider_ahachat.held.store import Customer, Held

log = logging.getLogger(__name__)

#: The event of the route that only delivers held messages: ``POST /webhooks/<conn_id>/_held``.
HELD_ROUTE = "_held"
#: Events a bot may not record itself: the route's, and the one the provider records.
RESERVED_EVENTS = (HELD_ROUTE, DELIVERED_EVENT)

#: ``deliver(customer, call, again)``: the held messages the call carries, oldest first, recorded as
#: delivered; with ``again`` (the call has an idempotency key), what an earlier answer to the same
#: call carried, if any. Returns them and whether they are that earlier answer's. Runs in a worker
#: thread.
DeliverHeld = Callable[[Customer, str, bool], "tuple[list[Held], bool]"]


class HeldKeysError(ValueError):
    """A connection's ``answer_keys`` is wrong; the message names the field and the rule."""


def keys_of(value: Any) -> Mapping[str, str]:
    """
    The answer's keys a connection's extra ``answer_keys`` gives (see
    :func:`~airflow_provider_ahachat.held.answer.answer_keys`).

    :raises HeldKeysError: naming the field and the rule.
    """
    try:
        return answer_keys(value)
    except AhaChatValidationError as err:
        raise HeldKeysError("; ".join(err.problems)) from None


def call_id(event: str, key: str | None) -> str:
    """
    What a call is recorded as with the messages it delivers: its event and its idempotency key
    (hashed; the same for a repeated call), or a value of its own.
    """
    tail = hashlib.sha256(key.encode("utf-8")).hexdigest()[:32] if key is not None else uuid.uuid4().hex
    return f"{event[:60]}#{tail}"


class HeldAnswers:
    """
    The held part of a receiver's answers.

    :param deliver: reaches the store (None: the receiver delivers nothing held).
    :param record: records an asset event, as the receiver's ``record``.
    """

    def __init__(self, deliver: DeliverHeld | None, record: Callable[..., Any]) -> None:
        self.deliver = deliver
        self.record = record

    async def answer(
        self,
        *,
        conn_id: str,
        bot_id: str | None,
        user_id: str,
        event: str,
        key: str | None,
        first: Sequence[Mapping[str, Any]],
        keys: Mapping[str, str] = ANSWER_KEYS,
    ) -> tuple[dict[str, Any], BackgroundTask | None]:
        """
        The answer to one accepted call, and what records its delivery after it has gone.

        When the store cannot be reached the answer carries the acknowledgement alone, and the
        messages wait for the next call.
        """
        from starlette.concurrency import run_in_threadpool

        delivered: list[Held] = []
        again = False
        customer = self._customer(conn_id, bot_id, user_id)
        if customer is not None and self.deliver is not None:
            call = call_id(event, key)
            try:
                delivered, again = await run_in_threadpool(self.deliver, customer, call, key is not None)
            except Exception as err:  # the store is busy or down: nothing was taken
                first_line = (str(err).strip().splitlines() or [""])[0][:200]
                log.error(
                    "AhaChat webhook %s: held messages not delivered now (they wait): %s: %s",
                    conn_id,
                    type(err).__name__,
                    first_line,
                )
        body = build_answer([held.piece() for held in delivered], first=first, keys=keys)
        if not delivered or again or customer is None:
            return body, None
        log.info(
            "AhaChat webhook %s/%s: %d held message(s) delivered to user %s",
            conn_id,
            event,
            len(delivered),
            user_id,
        )
        return body, BackgroundTask(self.follow_up, customer, delivered, event)

    def follow_up(self, customer: Customer, delivered: list[Held], event: str) -> None:
        """Record the delivery as an event of ``held_delivered`` (after the answer has gone)."""
        extra = delivered_extra(customer, delivered, call=event, now=time.time())
        try:
            self.record(event_uri(DELIVERED_EVENT, customer.conn_id), extra, None)
        except Exception as err:  # the messages went; only the DAGs' follow-up is missed
            log.error(
                "AhaChat webhook %s: the delivery of held messages %s could not be recorded: %s",
                customer.conn_id,
                [held.id for held in delivered],
                type(err).__name__,
            )

    @staticmethod
    def _customer(conn_id: str, bot_id: str | None, user_id: str) -> Customer | None:
        try:
            return Customer.of(conn_id, bot_id, user_id)
        except AhaChatValidationError:  # a connection without a Bot ID: nothing can be held for it
            return None
