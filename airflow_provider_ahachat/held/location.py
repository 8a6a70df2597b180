"""
Which store of held messages Airflow's configuration names: the same for the workers that hold
messages and the API servers that deliver them.

- ``[ahachat] held_conn_id``: an Airflow connection to a PostgreSQL database (or an SQLite file),
  for deployments on several machines. The store's table is created there.
- else ``[ahachat] held_path``: an SQLite file on a local disk, for one machine;
- else ``$AIRFLOW_HOME/ahachat/held.sqlite3``, unless the delivery ledger is on object storage
  (``[ahachat] ledger_path`` is a URL): that says the workers are on several machines, which one
  SQLite file cannot serve, so a connection must be named.

Airflow's own metadata database is refused: it gets no tables from a provider.
"""

from __future__ import annotations

import functools
import pathlib
from collections.abc import Callable
from typing import Any

from airflow_provider_ahachat.exceptions import AhaChatValidationError
from airflow_provider_ahachat.held.store import HeldStore

__all__ = ["SQLITE_NAME", "held_store", "held_url", "stored_held"]

#: The file of the default store, under ``$AIRFLOW_HOME/ahachat``.
SQLITE_NAME = "held.sqlite3"


def _setting(name: str) -> str | None:
    from airflow_provider_ahachat.version_compat import conf

    value = conf().get("ahachat", name, fallback=None)
    return value.strip() if isinstance(value, str) and value.strip() else None


def _sdk_connection(conn_id: str) -> Any:
    from airflow.sdk import BaseHook

    return BaseHook.get_connection(conn_id)


def _connection_url(conn_id: str, load_connection: Callable[[str], Any]) -> Any:
    """The SQLAlchemy URL of the connection ``conn_id``, as its own Airflow hook builds it."""
    where = f"[ahachat] held_conn_id ({conn_id!r})"
    try:
        hook = load_connection(conn_id).get_hook()
    except Exception as err:  # an unknown connection, or its provider is not installed
        raise AhaChatValidationError(
            f"{where}: cannot use this connection: {type(err).__name__}: {err}"
        ) from None
    try:
        return hook.sqlalchemy_url
    except (AttributeError, NotImplementedError):
        pass
    try:
        return hook.get_uri()
    except (AttributeError, NotImplementedError):
        raise AhaChatValidationError(f"{where}: must be a PostgreSQL or SQLite connection") from None


def _same_database(url: Any, other: Any) -> bool:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        first, second = make_url(url), make_url(other)
    except ArgumentError:  # a task process is given no usable metadata database address (3.x SDK)
        return False
    if first.get_backend_name() != second.get_backend_name():
        return False
    if first.get_backend_name() == "sqlite":
        return bool(first.database) and _file(first.database or "") == _file(second.database or "")
    return (first.host, first.port or 5432, first.database) == (
        second.host,
        second.port or 5432,
        second.database,
    )


def _file(name: str) -> pathlib.Path:
    return pathlib.Path(name).expanduser().resolve()


def held_url(load_connection: Callable[[str], Any] | None = None) -> Any:
    """
    The SQLAlchemy URL of the store Airflow's configuration names (see the module).

    :param load_connection: reads an Airflow connection by ID (the API server passes its own; a
        task's is the default).
    :raises AhaChatValidationError: naming the setting, when it names no usable database, names
        Airflow's metadata database, or is needed and missing.
    """
    from airflow_provider_ahachat.version_compat import airflow_home

    conn_id = _setting("held_conn_id")
    if conn_id is not None:
        url = _connection_url(conn_id, load_connection or _sdk_connection)
        setting = "[ahachat] held_conn_id"
    else:
        url = f"sqlite:///{_file(_setting('held_path') or str(airflow_home() / 'ahachat' / SQLITE_NAME))}"
        setting = "[ahachat] held_path"
        ledger = _setting("ledger_path") or ""
        if "://" in ledger and _setting("held_path") is None:
            raise AhaChatValidationError(
                "[ahachat] held_conn_id: the delivery ledger is on object storage, so workers run on "
                "several machines; held messages need a database they and the API servers all reach: "
                "name a PostgreSQL connection here (or set [ahachat] held_path to a file on one machine)"
            )
    metadata = _setting_of("database", "sql_alchemy_conn")
    if metadata is not None and _same_database(url, metadata):
        raise AhaChatValidationError(
            f"{setting}: names Airflow's metadata database, which gets no tables from a provider; "
            "name another database"
        )
    return url


def _setting_of(section: str, name: str) -> str | None:
    from airflow_provider_ahachat.version_compat import conf

    try:
        value = conf().get(section, name, fallback=None)
    except Exception:  # a component that is not given the metadata database's address
        return None
    return value if isinstance(value, str) and value else None


def held_store(load_connection: Callable[[str], Any] | None = None) -> HeldStore:
    """
    The store Airflow's configuration names, one per database in each process.

    :param load_connection: reads an Airflow connection by ID (see :func:`held_url`).
    """
    url = held_url(load_connection)
    return _store(url if isinstance(url, str) else url.render_as_string(hide_password=False))


def stored_held(load_connection: Callable[[str], Any] | None = None) -> HeldStore | None:
    """
    The store Airflow's configuration names, for a call that delivers: None when nothing can have
    been held yet (its SQLite file is not there, or nothing names a store where a task's
    :func:`held_store` would refuse to hold), so that a call never creates it.

    :param load_connection: reads an Airflow connection by ID (see :func:`held_url`).
    :raises AhaChatValidationError: naming the setting, when it names no usable database.
    """
    named = _setting("held_conn_id") or _setting("held_path")
    if named is None and "://" in (_setting("ledger_path") or ""):  # no task could have held anything
        return None
    url = held_url(load_connection)
    text = url if isinstance(url, str) else url.render_as_string(hide_password=False)
    if text.startswith("sqlite:///") and not pathlib.Path(text.removeprefix("sqlite:///")).is_file():
        return None
    return _store(text)


@functools.lru_cache(maxsize=8)
def _store(url: str) -> HeldStore:
    if url.startswith("sqlite:///"):
        return HeldStore.sqlite(url.removeprefix("sqlite:///"))
    return HeldStore.from_url(url)
