"""From a SQL query to AhaChat: one action for every row the query returns."""

from __future__ import annotations

import datetime
import inspect
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_provider_ahachat.exceptions import AhaChatValidationError
from airflow_provider_ahachat.models import literal_message_tag
from airflow_provider_ahachat.operators.ahachat import AhaChatAudienceOperator, check_outside_window
from airflow_provider_ahachat.registry import ACTIONS, RECIPIENT_ACTIONS

if TYPE_CHECKING:
    from airflow.providers.common.sql.hooks.sql import DbApiHook
    from airflow.sdk import Context

    from airflow_provider_ahachat.bulk.columns import Columns

__all__ = ["SqlToAhaChatOperator"]

#: The arguments of every action that acts on customers, in the registry's order: the keywords the
#: transfer takes besides its own, each for the actions that have it.
_ARGUMENTS = tuple(
    {arg.name: arg for name in RECIPIENT_ACTIONS for arg in ACTIONS[name].arguments if arg.templated}.values()
)
ARGUMENT_NAMES = tuple(dict.fromkeys(name for arg in _ARGUMENTS for name in arg.names))


def _takes_action_arguments(init: Callable[..., None]) -> Callable[..., None]:
    """
    ``init``, declared to take every name of :data:`ARGUMENT_NAMES` as a keyword (default None):
    Airflow checks the keywords of ``partial()`` and ``expand()`` against an operator's signature.
    """
    signature = inspect.signature(init)
    *own, rest = signature.parameters.values()
    added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None) for name in ARGUMENT_NAMES]
    init.__signature__ = signature.replace(parameters=[*own, *added, rest])  # type: ignore[attr-defined]
    return init


class SqlToAhaChatOperator(AhaChatAudienceOperator):
    """
    Run a query on any Airflow SQL connection and apply an AhaChat action to each row.

    Rows are fetched ``fetch_size`` at a time and streamed to the bulk engine, never loaded whole;
    everything :class:`~airflow_provider_ahachat.operators.ahachat.AhaChatAudienceOperator` says
    about rate limits, the delivery ledger, failures and dry runs holds here too.

    .. seealso::
        The examples in the README's "Many recipients at once" (the test suite builds them in a
        DAG, and runs the mapped one against PostgreSQL and the sandbox), and
        ``example_dags/example_ahachat_bulk_shipping.py``.

    :param sql: the query (templated; a path ending in ``.sql`` is read as a template).
    :param sql_conn_id: the connection of any SQL database Airflow has a ``DbApiHook`` for.
    :param action: what to do for each row: an action of the registry that acts on customers
        (``broadcast_block``, ``add_tags``...). Its arguments are given as keywords, templated, as
        its operator takes them: ``block_name``, ``message_tag`` and ``attributes`` (shared by every
        row; a row's own columns win) for ``broadcast_block``, ``tags`` for ``add_tags`` and so on.
    :param parameters: the query's parameters (templated).
    :param sql_hook_params: extra arguments for the SQL hook, e.g. ``{"schema": "shop"}``.
    :param user_id_column: the column that holds the messenger_user_id. Default ``user_id``,
        used when the query has it. A column named here must be in the query's result, or the
        task fails before anything is sent, listing the columns the query returned.
    :param phone_column: the column that holds the phone, for rows whose user ID is NULL (or for
        every row, in a query without a user ID column). Default ``phone``, used when the query
        has it; a column named here must be in the result. A row whose ID and phone are both NULL
        is ``invalid`` ("phone is NULL in row 17").
    :param attribute_columns: for actions that set attributes, which other columns are attributes:
        a list of column names, or a mapping of column name to attribute name; each must be in
        the result. Default: every column other than the user ID and the phone (and other
        columns named ``user_id`` or ``messenger_user_id``, never sent as attributes).
    :param dedupe_on: columns that, with the recipient, make a message distinct, e.g.
        ``["order_id"]``: each (customer, order) is messaged once, in this run and across the
        task's tries, and a repeated (customer, order) row is not. Default: one message per
        customer; later rows for them are repeats (``duplicate``), counted in the summary line.
    :param null_attributes: what a NULL attribute does: ``"invalid"`` (default) makes the row
        invalid, naming the row and the column; ``"omit"`` leaves the attribute out, so it keeps
        the value it had at AhaChat; ``"empty"`` sends it empty.
    :param count_rows: count the query's rows first (``SELECT COUNT(*) FROM (<sql>)``, with the
        same parameters) for the progress lines' total, percentage and time left; when the
        count fails, the progress says the total is unknown.
    :param outside_window: for the actions that message: ``"skip"`` (the default) reports the
        customers Messenger will not let the bot message now as ``outside_window``, without counting
        them against the failure limits; ``"fail"`` counts them; ``"hold"`` holds each one's message
        (the row's own attributes too, for a broadcast) for their next call of the bot, reported as
        ``held``. See :class:`~airflow_provider_ahachat.operators.ahachat.AhaChatAudienceOperator`.
    :param hold_for: with ``outside_window="hold"``: how long a held message waits (7 days by default).
    :param fetch_size: rows fetched from the database at a time.
    :param ahachat_conn_id: the ``ahachat`` connection to use.
    """

    template_fields: Sequence[str] = ("sql", "parameters", *ARGUMENT_NAMES, "ledger_path")
    template_ext: Sequence[str] = (".sql",)
    template_fields_renderers: ClassVar[dict[str, str]] = {
        "sql": "sql",
        "parameters": "json",
        **{name: arg.renderer for arg in _ARGUMENTS if arg.renderer for name in arg.names},
    }
    ui_color = "#f4c20d"

    @_takes_action_arguments
    def __init__(
        self,
        *,
        sql: str,
        sql_conn_id: str,
        action: str,
        parameters: Mapping[str, Any] | Sequence[Any] | None = None,
        sql_hook_params: dict[str, Any] | None = None,
        user_id_column: str | None = None,
        phone_column: str | None = None,
        attribute_columns: Sequence[str] | Mapping[str, str] | None = None,
        count_rows: bool = True,
        fetch_size: int = 1000,
        **kwargs: Any,
    ) -> None:
        if action not in RECIPIENT_ACTIONS:
            raise AhaChatValidationError(
                f"action: must be one of {', '.join(RECIPIENT_ACTIONS)}, got {action!r}"
            )
        arguments = {name: kwargs.pop(name, None) for name in ARGUMENT_NAMES}
        extra = {name for name, value in arguments.items() if value is not None} - set(
            ACTIONS[action].argument_names
        )
        if extra:
            raise AhaChatValidationError(f"{', '.join(sorted(extra))}: not used by the action {action!r}")
        if kwargs.get("user_id") is not None or kwargs.get("recipients") is not None:
            raise AhaChatValidationError(
                "user_id, recipients: the query's rows are the recipients; name their column "
                "with user_id_column or phone_column"
            )
        if not isinstance(fetch_size, int) or fetch_size < 1:
            raise AhaChatValidationError(f"fetch_size: must be a whole number above 0, got {fetch_size!r}")
        check_outside_window(action, kwargs.get("outside_window"), kwargs.get("hold_for"))
        if "message_tag" in arguments:  # a tag Meta retired fails here, when the DAG is parsed
            arguments["message_tag"] = literal_message_tag(arguments["message_tag"])
        super().__init__(**kwargs)
        self.sql = sql
        self.sql_conn_id = sql_conn_id
        self.action = action
        self.parameters = parameters
        self.sql_hook_params = sql_hook_params or {}
        #: Which of the recipient columns the user named; the others are defaults.
        self.named_columns = sorted(
            name for name, given in (("user_id", user_id_column), ("phone", phone_column)) if given
        )
        self.user_id_column = user_id_column or "user_id"
        self.phone_column = phone_column or "phone"
        self.attribute_columns = attribute_columns
        self.count_rows = count_rows
        self.fetch_size = fetch_size
        for name, value in arguments.items():
            setattr(self, name, value)

    def single_recipient_given(self) -> bool:
        return False

    def execute(self, context: Context) -> Any:
        columns = self.columns()
        hook = self._sql_hook()
        total = self._count(hook)
        conn = hook.get_conn()
        cursor = conn.cursor()
        try:
            if self.parameters is None:
                cursor.execute(self.sql)
            else:
                cursor.execute(self.sql, self.parameters)
            names = [str(column[0]) for column in cursor.description or ()]
            self.log.info("AhaChat: the query returns the columns %s", ", ".join(names))
            columns = columns.check(  # every column named must be there, before anything is sent
                names,
                "the query",
                takes_attributes=ACTIONS[self.action].takes_attributes,
                defaults="the default names, as neither user_id_column nor phone_column was given",
                field="user_id_column, phone_column",
            )
            self.log.info("AhaChat: recipients by %s", columns.describe())
            return self.run_bulk(
                context,
                self.action,
                self.action_arguments(),
                self._rows(cursor, names),
                total=total,
                columns=columns,
            )
        finally:
            cursor.close()
            conn.close()

    def columns(self) -> Columns:
        """The columns this task is told to use, before the query says which it returns."""
        chosen = self.attribute_columns
        if chosen is not None and not isinstance(chosen, Mapping):
            chosen = {column: column for column in chosen}
        from airflow_provider_ahachat.bulk.setup import columns_of

        return columns_of(
            self.bulk_options,
            user_id=(self.user_id_column,),
            phone=self.phone_column,
            attributes=dict(chosen) if chosen is not None else None,
            named=frozenset(self.named_columns),
        )

    def _sql_hook(self) -> DbApiHook:
        from airflow.providers.common.sql.hooks.sql import DbApiHook
        from airflow.sdk import BaseHook

        hook = BaseHook.get_connection(self.sql_conn_id).get_hook(hook_params=self.sql_hook_params)
        if not isinstance(hook, DbApiHook):
            raise AhaChatValidationError(
                f"sql_conn_id: connection {self.sql_conn_id!r} is not a SQL database "
                f"(its hook is {type(hook).__name__}, not a DbApiHook)"
            )
        return hook

    def _count(self, hook: DbApiHook) -> int | None:
        """How many rows the query returns, for the progress lines; None when it cannot be counted."""
        if not self.count_rows:
            self.log.info(
                "AhaChat: the total is unknown: the query's rows are not counted (count_rows=False)"
            )
            return None
        query = f"SELECT COUNT(*) FROM ({str(self.sql).strip().rstrip(';')}) AS ahachat_rows"
        started = time.monotonic()
        conn = hook.get_conn()
        try:
            cursor = conn.cursor()
            try:
                if self.parameters is None:
                    cursor.execute(query)
                else:
                    cursor.execute(query, self.parameters)
                (total,) = cursor.fetchone()
            finally:
                cursor.close()
        except Exception as err:
            self.log.info(
                "AhaChat: the total is unknown: the query's rows could not be counted (%s: %s)",
                type(err).__name__,
                str(err).strip().splitlines()[0][:200] if str(err).strip() else "",
            )
            return None
        finally:
            conn.close()
        self.log.info(
            "AhaChat: the query returns %s rows (counted in %.1f s)", f"{total:,}", time.monotonic() - started
        )
        return int(total)

    def _rows(self, cursor: Any, names: list[str]) -> Iterator[dict[str, Any]]:
        """The query's rows, by column name, fetched ``fetch_size`` at a time."""
        while True:
            batch = cursor.fetchmany(self.fetch_size)
            if not batch:
                return
            for values in batch:
                yield {column: _plain(value) for column, value in zip(names, values, strict=False)}


def _plain(value: Any) -> Any:
    """
    A database value as an attribute value. Numbers (``Decimal`` too), text, booleans, dates and
    datetimes pass as they are: the attribute layer writes each as AhaChat types it (``Decimal``
    exactly, a date ``dd/mm/yyyy``, a datetime ``dd/mm/yyyy HH:MM:SS``); a time of day becomes
    ISO text; bytes are read as UTF-8.
    """
    if isinstance(value, datetime.time):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value
