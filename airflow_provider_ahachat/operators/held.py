"""
Tasks that read and drop messages held until the customer writes.

A message Messenger would not let the bot send now (``outside_window="hold"``) waits in the store
of held messages (:mod:`airflow_provider_ahachat.held`) for the customer's next call to the bot's
JSON API block. These operators list what still waits for customers of one connection, and drop
it, so that a DAG can follow up ("still not delivered after three days: call the customer") or
withdraw what no longer holds ("the order was cancelled").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_ahachat.exceptions import AhaChatValidationError
from airflow_provider_ahachat.models import each_checked, load_json, validate_user_id

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_ahachat.held.store import Held, HeldStore, Selection

__all__ = ["DropHeldMessagesOperator", "ListHeldMessagesOperator"]


def _user_ids(value: Any) -> tuple[str, ...]:
    """``user_ids`` as IDs: one ID, a list of them, or a JSON list (a rendered XCom)."""
    value = (
        load_json(value, "user_ids") if isinstance(value, str) and value.lstrip().startswith("[") else value
    )
    if value is None or value == "":
        return ()
    values = value if isinstance(value, list | tuple) else [value]
    return tuple(each_checked(values, validate_user_id, "user_ids"))


class ListHeldMessagesOperator(BaseOperator):
    """
    List the messages still held for customers of a connection, oldest first.

    The XCom value is one entry per message: ``id``, ``messenger_user_id``, ``kind`` (the action it
    stands for), ``status`` (``held``, or ``expired`` with ``include_expired``), ``held_at``,
    ``expires_at``, the ``dag_id``, ``run_id``, ``task_id`` and ``map_index`` that held it, and the
    ``message`` as the customer will see it.

    :param ahachat_conn_id: the ``ahachat`` connection whose customers' messages to list.
    :param user_ids: only these customers: an ID or a list of them (templated).
    :param held_by_dag_id: only messages held by this DAG (templated).
    :param held_by_run_id: only messages held by this DAG run (templated).
    :param held_by_task_id: only messages held by this task (templated).
    :param include_expired: also messages past their expiry, which will never be delivered.
    """

    template_fields: Sequence[str] = ("user_ids", "held_by_dag_id", "held_by_run_id", "held_by_task_id")
    ui_color = "#f4c20d"

    def __init__(
        self,
        *,
        ahachat_conn_id: str = "ahachat_default",
        user_ids: Any = None,
        held_by_dag_id: str | None = None,
        held_by_run_id: str | None = None,
        held_by_task_id: str | None = None,
        include_expired: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.ahachat_conn_id = ahachat_conn_id
        self.user_ids = user_ids
        # Who held the messages: the DAG, run and task, each narrowing the selection further.
        self.held_by_dag_id, self.held_by_run_id, self.held_by_task_id = (
            held_by_dag_id,
            held_by_run_id,
            held_by_task_id,
        )
        self.include_expired = include_expired

    def selection(self) -> Selection:
        """Which messages, from the rendered arguments; checked before the store is opened."""
        from airflow_provider_ahachat.held.store import Selection

        return Selection(
            self.ahachat_conn_id,
            user_ids=_user_ids(self.user_ids),
            dag_id=self.held_by_dag_id or None,
            run_id=self.held_by_run_id or None,
            task_id=self.held_by_task_id or None,
            expired=self.include_expired,
        )

    def store(self) -> HeldStore:
        """The store Airflow's configuration names."""
        from airflow_provider_ahachat.held.location import held_store

        return held_store()

    def act(self, store: HeldStore, selection: Selection) -> list[Held]:
        """What the task does with the messages ``selection`` names."""
        return store.select(selection)

    #: The verb of the log line.
    verb = "held"

    def execute(self, context: Context) -> list[dict[str, Any]]:
        selection = self.selection()
        store = self.store()
        found = self.act(store, selection)
        customers = len({held.customer.user_id for held in found})
        self.log.info(
            "AhaChat: %d message(s) %s for %d customer(s) of connection %s",
            len(found),
            self.verb,
            customers,
            self.ahachat_conn_id,
        )
        now = store.clock()
        return [held.to_json(now) for held in found]


class DropHeldMessagesOperator(ListHeldMessagesOperator):
    """
    Drop the messages still held for customers of a connection: they will never be delivered.

    Takes the arguments of :class:`ListHeldMessagesOperator`; at least one of ``user_ids`` and the
    ``held_by_*`` arguments must narrow the selection, unless ``everything=True``. The XCom value
    lists the messages dropped, as :class:`ListHeldMessagesOperator` lists them (``status``
    ``dropped``).

    :param everything: drop every message held for the connection's customers.
    """

    def __init__(self, *, everything: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.everything = everything

    verb = "dropped"

    def selection(self) -> Selection:
        chosen = super().selection()
        narrowed = chosen.user_ids or chosen.dag_id or chosen.run_id or chosen.task_id
        if not narrowed and not self.everything:
            raise AhaChatValidationError(
                "user_ids, held_by_dag_id, held_by_run_id, held_by_task_id: give at least one, or "
                "everything=True to drop every message held for this connection"
            )
        return chosen

    def act(self, store: HeldStore, selection: Selection) -> list[Held]:
        return store.drop(selection)
