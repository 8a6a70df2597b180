"""
The bulk engine: one AhaChat action for many recipients, fast, polite and exactly once.

No Airflow import here (but to open an object storage URL). Each concern has its own module:

- ``columns.py``: which columns a run uses, checked against the input's header;
- ``recipients.py``: reading the input (lists, JSON, CSV and JSON Lines files) into validated rows;
- ``ledger.py``: the delivery journal's format, where it lives, and the claim protocol;
- ``pacing.py``: the shared rate limit and the 429 pause;
- ``report.py``: outcomes, counts, progress lines, the summary and the verdict;
- ``index.py``: every recipient's state during a run, in a temporary SQLite file;
- ``runner.py``: :class:`BulkRunner`, the producer and its workers.

A single send never imports this package.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_ahachat.actions import BoundAction
from airflow_provider_ahachat.bulk.columns import NULL_POLICIES, Columns
from airflow_provider_ahachat.bulk.ledger import Claims, Ledger, local_path, task_folder
from airflow_provider_ahachat.bulk.pacing import RateLimiter
from airflow_provider_ahachat.bulk.recipients import (
    RECIPIENT_FILE_SUFFIXES,
    Row,
    count_recipients,
    open_recipients,
    parse_row,
    read_recipients,
)
from airflow_provider_ahachat.bulk.report import (
    COUNTED_AS_FAILURES,
    DELIVERED,
    DUPLICATE,
    FAILED,
    INVALID,
    NOT_SENT,
    OUTCOMES,
    OUTSIDE_WINDOW,
    UNKNOWN,
    WOULD_SEND,
    AhaChatBulkError,
    Tally,
)
from airflow_provider_ahachat.bulk.runner import BulkRunner
from airflow_provider_ahachat.client import BaseAhaChatClient

__all__ = [
    "COUNTED_AS_FAILURES",
    "DELIVERED",
    "DUPLICATE",
    "FAILED",
    "INVALID",
    "NOT_SENT",
    "NULL_POLICIES",
    "OUTCOMES",
    "OUTSIDE_WINDOW",
    "RECIPIENT_FILE_SUFFIXES",
    "UNKNOWN",
    "WOULD_SEND",
    "AhaChatBulkError",
    "BulkRunner",
    "Claims",
    "Columns",
    "Ledger",
    "RateLimiter",
    "Row",
    "Tally",
    "bulk_action",
    "count_recipients",
    "local_path",
    "open_recipients",
    "parse_row",
    "read_recipients",
    "task_folder",
]


def bulk_action(client: BaseAhaChatClient, action: str, **arguments: Any) -> BoundAction:
    """
    ``action`` with its shared ``arguments`` validated now, before any row: ``client.bind(...)``.

    ``action`` is one of ``add_tags``, ``remove_tags`` (``tags=``), ``add_attributes``
    (``attributes=``, merged under each row's own), ``reset_attributes`` (``names=``), ``send_text``
    (``text=``), ``send_message`` (``message=``) and ``broadcast_block`` (``block_name=``,
    ``message_tag=``, ``attributes=``).
    """
    return client.bind(action, arguments)
