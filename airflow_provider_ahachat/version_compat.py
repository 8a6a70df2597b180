"""
Where the supported Airflow 3 releases differ, in one place (as Airflow's own providers do).

Each function imports what it needs when called, so importing this module costs nothing.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any


def mask_secret(secret: str) -> None:
    """Register ``secret`` with Airflow's secret masker, wherever this Airflow version keeps it."""
    try:
        from airflow.sdk.log import mask_secret as mask
    except ImportError:  # older Airflow 3 releases
        from airflow.sdk.execution_time.secrets_masker import mask_secret as mask  # type: ignore[no-redef]
    mask(secret)


def conf() -> Any:
    """Airflow's configuration."""
    try:
        from airflow.sdk.configuration import conf as configuration
    except ImportError:  # Airflow 3.1
        from airflow.configuration import conf as configuration
    return configuration


def sensor_timeout(message: str) -> Exception:
    """The timeout error that ``BaseSensorOperator`` turns into a skip under ``soft_fail``."""
    try:
        from airflow.sdk.exceptions import AirflowSensorTimeout
    except ImportError:  # Airflow 3.1
        from airflow.exceptions import AirflowSensorTimeout  # type: ignore[no-redef]
    return AirflowSensorTimeout(message)


def skip(message: str) -> Exception:
    """The exception that skips a task."""
    try:
        from airflow.sdk.exceptions import AirflowSkipException
    except ImportError:  # Airflow 3.1
        from airflow.exceptions import AirflowSkipException  # type: ignore[no-redef]
    return AirflowSkipException(message)


def object_storage_path(url: str) -> Any:
    """An ``ObjectStoragePath`` for ``url`` (``s3://conn_id@bucket/key``)."""
    from airflow.sdk import ObjectStoragePath

    return ObjectStoragePath(url)


def airflow_home() -> pathlib.Path:
    """``$AIRFLOW_HOME``, as Airflow reads it (``~/airflow`` when unset)."""
    return pathlib.Path(os.environ.get("AIRFLOW_HOME") or "~/airflow").expanduser()


def json_text(column: Any, key: str) -> Any:
    """
    The SQL expression for the text of ``column[key]``, a JSON column of Airflow's metadata database.

    Airflow 3.2 and later declare such columns (``AssetEvent.extra``) as SQLAlchemy's ``JSON``, whose
    ``[key]`` SQLAlchemy renders for each database. Airflow 3.1 declares them as
    ``sqlalchemy_jsonfield.JSONField``, which has no ``[key]``, over the same column in the
    database (JSON text on SQLite, ``json`` on PostgreSQL, ``JSON`` on MySQL): read as ``JSON``, the
    same expression works there too (``JSON_EXTRACT`` on SQLite, ``->>`` on PostgreSQL,
    ``JSON_UNQUOTE(JSON_EXTRACT(...))`` on MySQL).

    :param column: the column, such as ``AssetEvent.extra``.
    :param key: the top-level key.
    """
    from sqlalchemy import JSON, type_coerce

    return type_coerce(column, JSON)[key].as_string()
