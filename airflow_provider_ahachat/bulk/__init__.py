"""
The bulk engine: one AhaChat action for many recipients, fast, polite and exactly once.

No Airflow import here (but to open an object storage URL, and in ``setup.py``). Each concern has its own
module:

- ``columns.py``: which columns a run uses, checked against the input's header;
- ``recipients.py``: reading the input (lists, JSON, CSV and JSON Lines files) into validated rows;
- ``ledger.py``: the delivery journal's format, where it lives, and the claim protocol;
- ``pacing.py``: the shared rate limit and the 429 pause;
- ``report.py``: outcomes, counts, progress lines, the summary and the verdict;
- ``index.py``: every recipient's state during a run, in a temporary SQLite file;
- ``runner.py``: :class:`BulkRunner`, the producer and its workers;
- ``setup.py``: from an operator's ``BulkOptions`` to a runner: the ledger's place and lease, the
  connection's pace (the only module here that reads Airflow's configuration and connections).

A single send never imports this package.
"""

from __future__ import annotations

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

# Each outcome's name (DELIVERED, HELD, ...) is in ``bulk.report``; here only the lists of them.
from airflow_provider_ahachat.bulk.report import COUNTED_AS_FAILURES, OUTCOMES, AhaChatBulkError, Tally
from airflow_provider_ahachat.bulk.runner import BulkRunner

__all__ = [
    "COUNTED_AS_FAILURES",
    "NULL_POLICIES",
    "OUTCOMES",
    "RECIPIENT_FILE_SUFFIXES",
    "AhaChatBulkError",
    "BulkRunner",
    "Claims",
    "Columns",
    "Ledger",
    "RateLimiter",
    "Row",
    "Tally",
    "count_recipients",
    "local_path",
    "open_recipients",
    "parse_row",
    "read_recipients",
    "task_folder",
]
