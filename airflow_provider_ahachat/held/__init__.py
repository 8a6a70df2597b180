"""
Held until the customer writes: messages Messenger would not let the bot send now, kept for the
customer's next call to the bot's JSON API block.

- :mod:`.messages`: what a held message is (a text, a dynamic message, or a broadcast held as "set
  these attributes, then go to this block"), validated as the actions validate them.
- :mod:`.answer`: the JSON API answer that carries held messages, and its keys (provisional,
  overridable per connection as the paths are).
- :mod:`.store`: where held messages live (a SQL database: a SQLite file on one machine, or a
  database the user names), with expiry, order per customer and exactly-once delivery.
- :mod:`.location`: which store Airflow's configuration names (the only part that reads Airflow).

This module imports nothing heavy: DAG files may read :data:`DEFAULT_HOLD_FOR` and
:func:`validate_hold_for` at parse time.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from airflow_provider_ahachat.exceptions import AhaChatValidationError

__all__ = ["DEFAULT_HOLD_FOR", "MAX_HOLD_FOR", "validate_hold_for"]

#: How long a message is held when ``hold_for`` is not given.
DEFAULT_HOLD_FOR = timedelta(days=7)
#: The longest a message may be held.
MAX_HOLD_FOR = timedelta(days=90)


def validate_hold_for(value: Any, field: str = "hold_for") -> timedelta:
    """
    ``value`` as a :class:`~datetime.timedelta`: a timedelta, or seconds (a number), more than 0 and
    at most :data:`MAX_HOLD_FOR`; None is :data:`DEFAULT_HOLD_FOR`.

    :param value: the duration, as a DAG author gives it.
    :param field: the field to name in errors.
    :raises AhaChatValidationError: naming the field and the rule.
    """
    if value is None:
        return DEFAULT_HOLD_FOR
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        value = timedelta(seconds=value)
    if not isinstance(value, timedelta) or not timedelta(0) < value <= MAX_HOLD_FOR:
        raise AhaChatValidationError(
            f"{field}: must be a timedelta or seconds, more than 0 and at most {MAX_HOLD_FOR.days} days, "
            f"got {value!r}"
        )
    return value
