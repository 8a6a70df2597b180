"""
From an operator's settings to a bulk run: the ledger's place and lease, the pace, the runner.

The one module of the bulk engine that reads Airflow, and only when asked: its configuration
(``[ahachat] ledger_path`` and ``ledger_lease_seconds``), the connection's extra fields
(``rate_limit``, ``concurrency``, ``rate_limit_redis_conn_id``) and, for a rate limit shared by
every worker, a Redis connection. It takes the operator's
:class:`~airflow_provider_ahachat.bulk_options.BulkOptions` whole.
"""

from __future__ import annotations

import math
import pathlib
from collections.abc import Mapping
from dataclasses import fields
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_provider_ahachat.bulk.columns import Columns
from airflow_provider_ahachat.bulk.ledger import Ledger, task_folder
from airflow_provider_ahachat.bulk.runner import BulkRunner
from airflow_provider_ahachat.bulk_options import BulkOptions
from airflow_provider_ahachat.exceptions import AhaChatValidationError
from airflow_provider_ahachat.get_provider_info import DEFAULT_CONCURRENCY, DEFAULT_RATE_LIMIT
from airflow_provider_ahachat.settings import extra_number, extra_value

if TYPE_CHECKING:
    from airflow_provider_ahachat.bulk.pacing import RateLimiter
    from airflow_provider_ahachat.hooks.ahachat import AhaChatHook

#: Seconds a ledger lease on object storage lasts unless renewed, when ``[ahachat] ledger_lease_seconds``
#: does not say otherwise.
DEFAULT_LEDGER_LEASE_SECONDS = 60.0

#: The options that shape how each row is read (:class:`Columns`), not the runner itself.
COLUMN_OPTIONS = frozenset({"dedupe_on", "null_attributes"})


def default_concurrency(rate_limit: float | None) -> int:
    """
    Requests in flight when nobody says: enough for ``rate_limit`` at 200 ms a request, at least 16.

    The pace cannot pass ``concurrency / latency``: 16 in flight at 100 ms give 160 requests/s at most.
    """
    if not rate_limit:
        return DEFAULT_CONCURRENCY
    return max(DEFAULT_CONCURRENCY, min(256, math.ceil(rate_limit * 0.2)))


def ledger_root(ledger_path: Any = None) -> Any:
    """
    The root of the delivery ledger: ``ledger_path`` (a local folder, an object storage URL or an
    ``ObjectStoragePath``), else ``[ahachat] ledger_path`` from Airflow's configuration, else
    ``$AIRFLOW_HOME/ahachat/ledger``.
    """
    from airflow_provider_ahachat.version_compat import airflow_home, conf, object_storage_path

    if ledger_path in (None, ""):
        ledger_path = conf().get("ahachat", "ledger_path", fallback=None) or str(
            airflow_home() / "ahachat" / "ledger"
        )
    if not isinstance(ledger_path, str):
        return ledger_path
    if "://" in ledger_path:
        return object_storage_path(ledger_path)
    return pathlib.Path(ledger_path).expanduser()


def ledger_lease_seconds() -> float:
    """
    How long a ledger lease on object storage lasts unless renewed: ``[ahachat] ledger_lease_seconds``
    (at least 5), else 60. A retry on another worker waits at most this long after a worker was lost.
    """
    from airflow_provider_ahachat.version_compat import conf

    raw = conf().get("ahachat", "ledger_lease_seconds", fallback=None)
    if raw in (None, ""):
        return DEFAULT_LEDGER_LEASE_SECONDS
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 5 <= seconds <= 3600:
        raise AhaChatValidationError(
            f"[ahachat] ledger_lease_seconds: must be seconds from 5 to 3600, got {raw!r}"
        )
    return seconds


def ledger_folder(ledger_path: Any, *, dag_id: str, run_id: str, task_id: str, map_index: int | None) -> Any:
    """The ledger folder of one task instance, under :func:`ledger_root` of ``ledger_path``."""
    return task_folder(
        ledger_root(ledger_path), dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=map_index
    )


def task_ledger(ledger_path: Any, ti: Any) -> Ledger:
    """The delivery ledger of the task instance ``ti``, under ``ledger_path`` (see :func:`ledger_root`)."""
    folder = ledger_folder(
        ledger_path,
        dag_id=ti.dag_id,
        run_id=ti.run_id,
        task_id=ti.task_id,
        map_index=getattr(ti, "map_index", -1),
    )
    lease = ledger_lease_seconds()
    return Ledger(folder, wait=max(60.0, lease), lease_ttl=lease)


def columns_of(options: BulkOptions, **more: Any) -> Columns:
    """
    The options' ``dedupe_on`` and ``null_attributes``, checked, as the columns of a run (with
    ``more`` of :meth:`Columns.of <airflow_provider_ahachat.bulk.columns.Columns.of>`).
    """
    return Columns.of(dedupe_on=options.dedupe_on, null_attributes=options.null_attributes, **more)


def runner_options(options: BulkOptions) -> dict[str, Any]:
    """The keywords of :class:`BulkRunner` the options set (all but the columns')."""
    return {f.name: getattr(options, f.name) for f in fields(options) if f.name not in COLUMN_OPTIONS}


def bulk_runner(
    hook: AhaChatHook,
    action: str,
    arguments: Mapping[str, Any],
    options: BulkOptions,
    *,
    ledger: Ledger | None,
    **more: Any,
) -> BulkRunner:
    """
    A :class:`BulkRunner` for ``action`` on the hook's connection, as ``options`` say.

    ``arguments`` (the tags, the text, the block...) are validated now, before anything is sent.
    ``rate_limit`` and ``concurrency`` default to the connection's extra fields, then to 20
    requests per second and :func:`default_concurrency`. ``more`` goes to the runner (``columns``,
    ``resend_unknown``, ``logger``, ``outside_window``).
    """
    client = hook.client
    extra = hook.connection.extra_dejson
    settings = runner_options(options)
    try:
        if settings["rate_limit"] is None:
            settings["rate_limit"] = extra_number(extra, "rate_limit", DEFAULT_RATE_LIMIT, zero=True)
        if settings["concurrency"] is None:
            default = default_concurrency(settings["rate_limit"])
            settings["concurrency"] = int(extra_number(extra, "concurrency", default, whole=True))
    except AhaChatValidationError as err:
        raise AhaChatValidationError(f"connection {hook.ahachat_conn_id!r}: {err}") from None
    if isinstance(settings["concurrency"], int) and settings["concurrency"] > 0:
        client.ensure_pool(settings["concurrency"])  # a keep-alive connection per worker
    redis_conn_id = extra_value(extra, "rate_limit_redis_conn_id")
    if redis_conn_id and settings["rate_limit"]:
        more["limiter"] = shared_rate_limiter(hook, str(redis_conn_id), settings["rate_limit"])
    more.setdefault("columns", columns_of(options))
    return BulkRunner(client, client.bind(action, arguments), ledger=ledger, **settings, **more)


def shared_rate_limiter(hook: AhaChatHook, redis_conn_id: str, rate_limit: float) -> RateLimiter:
    """
    The bot's rate limit shared through the Redis connection ``redis_conn_id`` by every task that
    sends for the same bot (at the same AhaChat address).
    """
    try:
        from airflow.providers.redis.hooks.redis import RedisHook
    except ImportError:
        raise AhaChatValidationError(
            f"connection {hook.ahachat_conn_id!r}: extra field 'rate_limit_redis_conn_id' needs the "
            "Redis provider: pip install 'airflow-provider-ahachat[redis]'"
        ) from None
    from airflow_provider_ahachat.bulk.pacing import RedisRateLimiter

    client = hook.client
    key = f"ahachat:rate:{urlsplit(client.base_url).netloc}:{client.bot_id}"
    return RedisRateLimiter(RedisHook(redis_conn_id=redis_conn_id).get_conn(), key, rate_limit)
