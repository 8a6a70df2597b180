"""
How an audience task acts for many recipients, as its operator holds it: :class:`BulkOptions`.

Operators build one when a DAG is parsed, so this module loads nothing of the bulk engine
(:mod:`airflow_provider_ahachat.bulk`), which takes the options whole when the task runs
(:func:`airflow_provider_ahachat.bulk.setup.bulk_runner`). No Airflow import here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class BulkOptions:
    """
    Everything about a run for many but who (``recipients``), what (the action's arguments) and where
    the ledger lives (``ledger_path``, templated). Each is the argument of the same name of
    :class:`~airflow_provider_ahachat.operators.ahachat.AhaChatAudienceOperator`, which says what it does:

    :param concurrency: requests in flight at once.
    :param rate_limit: requests per second.
    :param max_failures: how many recipients not delivered fail the task.
    :param max_failure_ratio: what share of recipients not delivered fails the task.
    :param dry_run: send nothing, report what would be sent.
    :param progress_interval: seconds between progress lines.
    :param dedupe_on: the columns that, with the recipient, make a message distinct.
    :param null_attributes: what a NULL attribute value does.
    :param resolve_phones: look recipients given by phone up first.
    :param delivery_mark: the attribute that settles an earlier try's unknown outcomes.
    """

    concurrency: int | None = None
    rate_limit: float | None = None
    max_failures: int | None = None
    max_failure_ratio: float | None = None
    dry_run: bool = False
    progress_interval: float = 5.0
    dedupe_on: str | Sequence[str] | None = None
    null_attributes: str = "invalid"
    resolve_phones: bool = False
    delivery_mark: str | None = None
