"""From a SQL query to AhaChat: one action for every row the query returns."""

from __future__ import annotations

import datetime
import decimal
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_provider_ahachat.actions import ACTIONS, RECIPIENT_ACTIONS
from airflow_provider_ahachat.exceptions import AhaChatValidationError
from airflow_provider_ahachat.models import DEFAULT_MESSAGE_TAG, MessageTag
from airflow_provider_ahachat.operators.ahachat import AhaChatAudienceOperator

if TYPE_CHECKING:
    from airflow.providers.common.sql.hooks.sql import DbApiHook
    from airflow.sdk import Context

__all__ = ["SqlToAhaChatOperator"]


class SqlToAhaChatOperator(AhaChatAudienceOperator):
    """
    Run a query on any Airflow SQL connection and apply an AhaChat action to each row.

    Rows are fetched ``fetch_size`` at a time and streamed to the bulk engine, never loaded whole;
    everything :class:`~airflow_provider_ahachat.operators.ahachat.AhaChatAudienceOperator` says
    about rate limits, the delivery ledger, failures and dry runs holds here too.

    .. code-block:: python

        SqlToAhaChatOperator(
            task_id="shipping_update",
            sql_conn_id="shop_postgres",
            sql="SELECT messenger_user_id, tracking_number FROM orders WHERE shipped_on = %(day)s",
            parameters={"day": "{{ ds }}"},
            user_id_column="messenger_user_id",
            action="broadcast_block",
            block_name="shipping_update",
            message_tag="POST_PURCHASE_UPDATE",
        )

    :param sql: the query (templated; a path ending in ``.sql`` is read as a template).
    :param sql_conn_id: the connection of any SQL database Airflow has a ``DbApiHook`` for.
    :param action: ``broadcast_block``, ``add_tags``, ``remove_tags``, ``add_attributes``,
        ``reset_attributes``, ``send_text`` or ``send_message``.
    :param parameters: the query's parameters (templated).
    :param sql_hook_params: extra arguments for the SQL hook, e.g. ``{"schema": "shop"}``.
    :param user_id_column: the column that holds the messenger_user_id.
    :param phone_column: the column that holds the phone, for rows without a user ID.
    :param attribute_columns: for actions that set attributes, which other columns are attributes:
        a list of column names, or a mapping of column name to attribute name. Default: every
        column other than the user ID and the phone.
    :param block_name: for ``broadcast_block``: the block to start (templated).
    :param message_tag: for ``broadcast_block``: the message tag (templated).
    :param attributes: for ``broadcast_block`` and ``add_attributes``, attributes shared by every
        row (a row's own columns win); for ``reset_attributes``, the names to clear (templated).
    :param tags: for ``add_tags`` and ``remove_tags``: a tag or a list of tags (templated).
    :param text: for ``send_text``: the text (templated).
    :param message: for ``send_message``: the dynamic message (templated).
    :param fetch_size: rows fetched from the database at a time.
    :param ahachat_conn_id: the ``ahachat`` connection to use.
    """

    template_fields: Sequence[str] = (
        "sql",
        "parameters",
        "block_name",
        "message_tag",
        "attributes",
        "tags",
        "text",
        "message",
        "ledger_path",
    )
    template_ext: Sequence[str] = (".sql",)
    template_fields_renderers: ClassVar[dict[str, str]] = {
        "sql": "sql",
        "parameters": "json",
        "attributes": "json",
        "message": "json",
    }
    ui_color = "#f4c20d"

    def __init__(
        self,
        *,
        sql: str,
        sql_conn_id: str,
        action: str,
        parameters: Mapping[str, Any] | Sequence[Any] | None = None,
        sql_hook_params: dict[str, Any] | None = None,
        user_id_column: str = "user_id",
        phone_column: str = "phone",
        attribute_columns: Sequence[str] | Mapping[str, str] | None = None,
        block_name: str | None = None,
        message_tag: MessageTag | str = DEFAULT_MESSAGE_TAG,
        attributes: Any = None,
        tags: str | list[str] | None = None,
        text: str | None = None,
        message: Any = None,
        fetch_size: int = 1000,
        **kwargs: Any,
    ) -> None:
        if action not in RECIPIENT_ACTIONS:
            raise AhaChatValidationError(
                f"action: must be one of {', '.join(RECIPIENT_ACTIONS)}, got {action!r}"
            )
        given = {
            name
            for name, value in {
                "block_name": block_name,
                "attributes": attributes,
                "tags": tags,
                "text": text,
                "message": message,
            }.items()
            if value is not None
        }
        extra = given - set(ACTIONS[action].argument_names)
        if extra:
            raise AhaChatValidationError(f"{', '.join(sorted(extra))}: not used by the action {action!r}")
        if not isinstance(fetch_size, int) or fetch_size < 1:
            raise AhaChatValidationError(f"fetch_size: must be a whole number above 0, got {fetch_size!r}")
        super().__init__(**kwargs)
        self.sql = sql
        self.sql_conn_id = sql_conn_id
        self.action = action
        self.parameters = parameters
        self.sql_hook_params = sql_hook_params or {}
        self.user_id_column = user_id_column
        self.phone_column = phone_column
        self.attribute_columns = attribute_columns
        self.block_name = block_name
        self.message_tag = message_tag.value if isinstance(message_tag, MessageTag) else message_tag
        self.attributes = attributes
        self.tags = tags
        self.text = text
        self.message = message
        self.fetch_size = fetch_size

    @property
    def action_name(self) -> str:
        return self.action

    def single_recipient_given(self) -> bool:
        return False

    def execute(self, context: Context) -> Any:
        return self.run_bulk(context, self.action_name, self.bulk_arguments(), self._rows())

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

    def _rows(self) -> Iterator[dict[str, Any]]:
        """The query's rows as recipients, fetched ``fetch_size`` at a time."""
        hook = self._sql_hook()
        conn = hook.get_conn()
        cursor = conn.cursor()
        try:
            if self.parameters is None:
                cursor.execute(self.sql)
            else:
                cursor.execute(self.sql, self.parameters)
            columns = [str(column[0]) for column in cursor.description or ()]
            rename = self._column_names(columns)
            self.log.info("AhaChat: the query returns the columns %s", ", ".join(columns))
            while True:
                batch = cursor.fetchmany(self.fetch_size)
                if not batch:
                    return
                for values in batch:
                    yield {
                        rename[column]: _plain(value)
                        for column, value in zip(columns, values, strict=False)
                        if column in rename
                    }
        finally:
            cursor.close()
            conn.close()

    def _column_names(self, columns: list[str]) -> dict[str, str]:
        """Column name to row key: ``user_id``, ``phone`` or an attribute name."""
        if self.user_id_column not in columns and self.phone_column not in columns:
            raise AhaChatValidationError(
                f"user_id_column, phone_column: the query returns neither {self.user_id_column!r} nor "
                f"{self.phone_column!r} (its columns: {', '.join(columns)})"
            )
        rename = {self.user_id_column: "user_id", self.phone_column: "phone"}
        others = [c for c in columns if c not in rename]
        if self.attribute_columns is None:
            chosen = {c: c for c in others}
        elif isinstance(self.attribute_columns, Mapping):
            chosen = dict(self.attribute_columns)
        else:
            chosen = {c: c for c in self.attribute_columns}
        missing = [c for c in chosen if c not in columns]
        if missing:
            raise AhaChatValidationError(
                f"attribute_columns: the query returns no column {', '.join(map(repr, missing))}"
            )
        return {**{c: k for c, k in rename.items() if c in columns}, **chosen}


def _plain(value: Any) -> Any:
    """A database value as an attribute value: text, a number or a boolean."""
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value
