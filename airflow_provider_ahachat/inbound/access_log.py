"""
Keeps the approval tokens of Messenger taps out of the API server's access log, on every release.

A question's button calls ``/ahachat/approvals/answer?t=<signed token>&messenger_user_id=...``. Airflow
3.2 and later log each request through their own middleware, which masks the token; Airflow 3.1
lets uvicorn log the request line whole, token included. :func:`install` adds
:class:`AnswerTokenFilter` to the access loggers of uvicorn and gunicorn, which rewrites the token of
an answer URL to ``***`` before any handler sees the line. Where a server does not log requests, the
filter sees nothing.
"""

from __future__ import annotations

import logging
import re
from typing import Any

__all__ = ["ACCESS_LOGGERS", "AnswerTokenFilter", "install", "mask_answer_tokens"]

#: The loggers that write one line per request: uvicorn's (Airflow 3.1) and gunicorn's.
ACCESS_LOGGERS = ("uvicorn.access", "gunicorn.access")
#: The end of the answer endpoint's path (``/ahachat`` is the plugin's prefix).
_ANSWER_PATH = "/approvals/answer"
#: The token parameter's value, up to the next parameter (or the end of the request line); a
#: gunicorn record also carries the query string alone (``t=...``).
_TOKEN = re.compile(r"((?:^|[?&])t=)[^&#\s\"']*")


def mask_answer_tokens(text: str) -> str:
    """``text`` with the ``t`` parameter of any answer URL in it replaced by ``***``."""
    if _ANSWER_PATH not in text:
        return text
    return _TOKEN.sub(r"\1***", text)


def _masked(value: Any) -> Any:
    return _TOKEN.sub(r"\1***", value) if isinstance(value, str) else value


class AnswerTokenFilter(logging.Filter):
    """Masks the answer token in an access log record of an answer URL: its message and arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, dict):  # gunicorn's atoms: the request line, the path, the query...
            values: list[Any] = list(record.args.values())
        else:
            values = list(record.args or ())
        if not any(isinstance(v, str) and _ANSWER_PATH in v for v in [record.msg, *values]):
            return True
        record.msg = _masked(record.msg)
        if isinstance(record.args, dict):
            record.args = {key: _masked(value) for key, value in record.args.items()}
        elif isinstance(record.args, tuple):
            record.args = tuple(_masked(arg) for arg in record.args)
        return True


def install() -> None:
    """Add :class:`AnswerTokenFilter` to the access loggers, once per process."""
    for name in ACCESS_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, AnswerTokenFilter) for f in logger.filters):
            logger.addFilter(AnswerTokenFilter())
