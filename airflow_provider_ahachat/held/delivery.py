"""
The two ends of a held message, as the operators and the webhook receiver use them.

- :class:`Holder`: what a task holds for each customer Messenger refused as outside the window,
  validated before anything is sent; :func:`hold_key`, the key it holds a customer's message under,
  the same in every try, so that a retry holds nothing more.
- :func:`answer_with_held`: a call of the bot's JSON API block answered with the event's
  acknowledgement, then the customer's held messages (recorded as delivered, exactly once).
- :func:`delivered_extra`: the ``extra`` of the asset event ``held_delivered`` that records a
  delivery for DAGs, in the shape of every bot event
  (:func:`~airflow_provider_ahachat.events.customer_events` reads it).

No Airflow import.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow_provider_ahachat.exceptions import AhaChatValidationError
from airflow_provider_ahachat.held import validate_hold_for
from airflow_provider_ahachat.held.answer import ANSWER_KEYS, build_answer
from airflow_provider_ahachat.held.messages import KINDS, Piece, held_piece
from airflow_provider_ahachat.held.store import Customer, Held, HeldStore, Hold, TaskRef

__all__ = ["DELIVERED_EVENT", "Holder", "answer_with_held", "delivered_extra", "hold_key"]

#: The event a delivery of held messages is recorded as: ``ahachat_event("held_delivered")``.
DELIVERED_EVENT = "held_delivered"
#: What the event says of each message.
_EVENT_FIELDS = ("id", "kind", "held_at", "expires_at", "done_at", "dag_id", "run_id", "task_id", "map_index")


def hold_key(task: TaskRef, action: str, recipient: str) -> str:
    """
    The key a task instance holds a message for ``recipient`` under: the same in every try.

    :param task: the task instance.
    :param action: the action whose message is held.
    :param recipient: the recipient's key in the run (their ``messenger_user_id`` for one send).
    """
    return json.dumps([task.dag_id, task.run_id, task.task_id, task.map_index, action, recipient])


@dataclass(frozen=True)
class Holder:
    """
    Holds one task's message for each customer Messenger refused as outside the window.

    Built with :meth:`of` before anything is sent, so that a message that could never be held (or
    a bad ``hold_for``) fails the task first.

    :param store: where the messages go.
    :param conn_id: the ``ahachat`` connection the customers call back through.
    :param bot_id: its Bot ID.
    :param action: the action whose message is held (:data:`~.messages.KINDS`).
    :param arguments: the action's arguments, as the operator has them rendered.
    :param hold_for: how long each message waits.
    :param task: the task instance that holds them.
    :param shared: the message, when no customer's own attributes change it.
    """

    store: HeldStore
    conn_id: str
    bot_id: str
    action: str
    arguments: Mapping[str, Any]
    hold_for: timedelta
    task: TaskRef
    shared: Piece

    @classmethod
    def of(
        cls,
        store: HeldStore,
        *,
        conn_id: str,
        bot_id: str,
        action: str,
        arguments: Mapping[str, Any],
        hold_for: Any,
        task: TaskRef,
    ) -> Holder:
        """
        A holder, its message validated as the action validates it.

        :raises AhaChatValidationError: naming the bad argument or ``hold_for``.
        """
        if action not in KINDS:
            raise AhaChatValidationError(
                f"outside_window: 'hold' holds messages only ({', '.join(KINDS)}), not {action!r}"
            )
        given = {name: value for name, value in arguments.items() if name in KINDS[action]}
        shared = held_piece(action, given)
        return cls(store, conn_id, bot_id, action, given, validate_hold_for(hold_for), task, shared)

    def hold(self, user_id: str, key: str, attributes: Mapping[str, Any] | None = None) -> int:
        """
        Hold the message for the customer ``user_id``; once per ``key`` (a retry holds nothing more).

        :param user_id: the customer's ``messenger_user_id``.
        :param key: the recipient's key in the run.
        :param attributes: the customer's own attributes (a broadcast's, from a run for many).
        :returns: the message's ID in the store (an earlier try's, when this key was held before).
        """
        piece = held_piece(self.action, self.arguments, attributes) if attributes else self.shared
        customer = Customer.of(self.conn_id, self.bot_id, user_id)
        message = Hold(
            customer,
            self.action,
            piece,
            hold_for=self.hold_for,
            key=hold_key(self.task, self.action, key),
            task=self.task,
        )
        (stored,) = self.store.hold([message])
        return stored


def answer_with_held(
    store: HeldStore,
    customer: Customer,
    *,
    call: str,
    first: Sequence[Mapping[str, Any]] = (),
    keys: Mapping[str, str] = ANSWER_KEYS,
) -> tuple[dict[str, Any], list[Held]]:
    """
    The answer to a call of ``customer``: the messages ``first``, then their held messages that one
    answer carries, oldest first; and those messages, now recorded as delivered.

    :param store: the store of held messages.
    :param customer: who calls (the connection, its bot, the ``messenger_user_id`` the call carries).
    :param call: the event called, recorded with the messages.
    :param first: the event's acknowledgement.
    :param keys: the answer's keys (the connection's ``answer_keys``).
    """
    delivered = store.deliver(customer, call=call)
    return build_answer([held.piece() for held in delivered], first=first, keys=keys), delivered


def delivered_extra(
    customer: Customer, delivered: Sequence[Held], *, call: str, now: float
) -> dict[str, Any]:
    """
    The ``extra`` of the asset event that records one delivery: who, when, during which call, and
    which messages (their ID, kind, when they were held and by which task; not their text).

    :param customer: who got them.
    :param delivered: the messages delivered, in order.
    :param call: the event whose answer carried them.
    :param now: when (seconds since the epoch).
    """
    messages = [{key: held.to_json(now)[key] for key in _EVENT_FIELDS} for held in delivered]
    return {
        "messenger_user_id": customer.user_id,
        "bot_id": customer.bot_id,
        "conn_id": customer.conn_id,
        "event": DELIVERED_EVENT,
        "received_at": datetime.fromtimestamp(now, timezone.utc).isoformat(),
        "fields": {"during": call, "messages": messages},
    }
