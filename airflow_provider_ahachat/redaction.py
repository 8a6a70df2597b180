"""
The token stays out of every text the provider keeps: one place that redacts it. No Airflow import here.

A Bot Token is registered once it is known (:func:`register_secret`); from then on :func:`redact`
takes it out of any text by value (whole, percent-encoded, or any long enough piece of it), and
:func:`bounded` also cuts what a server sent to a size the provider may keep. The HTTP libraries'
own loggers are filtered too (:func:`redact_logs_of`), since they log URLs, which carry the token.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

#: The query parameter that carries the Bot Token, as AhaChat documents it.
TOKEN_PARAM = "ahachat_token"

_TOKEN_IN_QUERY = re.compile(rf"({TOKEN_PARAM}=)[^&\s\"'#]+")
REDACTED = "***"

#: The most characters of anything a server sent that the provider keeps (in an error, a log line,
#: a report, a journal, XCom, a trigger event); the rest is cut, and the text says so.
MAX_KEPT = 2000

#: Any run of at least this many characters of a token (its start, its end, a piece of it) is
#: redacted as the whole token is: a server, or a cut, may keep only part of it.
MIN_FRAGMENT = 8

#: In data AhaChat answered (IDs, phones), which the provider passes on, only longer pieces are
#: redacted, so that a run of digits a token happens to share with a user ID never changes that ID.
DATA_FRAGMENT = 16

_live_secrets: set[str] = set()
_patterns: dict[tuple[str, int], re.Pattern[str]] = {}
_registry_lock = threading.Lock()


def register_secret(secret: str | None) -> None:
    """
    Remember ``secret`` (a Bot Token) as live: :func:`redact` and the HTTP libraries' log filter
    then take it out of any text, by value, wherever it appears.
    """
    if secret and len(secret) >= 4:
        with _registry_lock:
            _live_secrets.add(secret)


def _fragment_pattern(secret: str, size: int) -> re.Pattern[str]:
    """Where any :data:`MIN_FRAGMENT` characters of ``secret`` (or of its percent-encoded form) start."""
    pattern = _patterns.get((secret, size))
    if pattern is not None:
        return pattern
    windows = {
        form[i : i + size] for form in {secret, quote(secret, safe="")} for i in range(len(form) - size + 1)
    }
    alternatives = "|".join(re.escape(w) for w in sorted(windows))
    pattern = re.compile(f"(?=(?:{alternatives}))")
    with _registry_lock:
        _patterns[(secret, size)] = pattern
    return pattern


def _redact_fragments(text: str, secret: str, size: int) -> str:
    """``text`` with every run made of pieces of ``secret`` at least :data:`MIN_FRAGMENT` long redacted."""
    if len(secret) < size:
        return text.replace(secret, REDACTED)
    runs: list[list[int]] = []
    for match in _fragment_pattern(secret, size).finditer(text):
        start, end = match.start(), match.start() + size
        if runs and start <= runs[-1][1]:
            runs[-1][1] = max(runs[-1][1], end)
        else:
            runs.append([start, end])
    if not runs:
        return text
    pieces, last = [], 0
    for start, end in runs:
        pieces += [text[last:start], REDACTED]
        last = end
    pieces.append(text[last:])
    return "".join(pieces)


def redact(text: str, secret: str | None = None, *, fragment: int = MIN_FRAGMENT) -> str:
    """
    ``text`` without ``secret``, without any token registered with :func:`register_secret`, and
    without any ``ahachat_token=`` query value. Any piece of a token at least :data:`MIN_FRAGMENT`
    characters long goes too (what is left when something cut it), as does its percent-encoded form.
    """
    with _registry_lock:
        secrets = set(_live_secrets)
    if secret:
        secrets.add(secret)
    for each in sorted(secrets, key=len, reverse=True):
        text = _redact_fragments(text, each, fragment)
    return _TOKEN_IN_QUERY.sub(rf"\g<1>{REDACTED}", text)


def bounded(text: Any, secret: str | None = None, limit: int = MAX_KEPT) -> str:
    """
    ``text`` as the provider may keep it: redacted first, then cut to ``limit`` characters, the cut
    said in the text. Everything a server sent goes through here before it is kept anywhere.
    """
    text = text if isinstance(text, str) else str(text)
    total = len(text)
    # Redact before cutting; a first, generous cut keeps the redaction cheap on a 20 MB body (a
    # token it splits there lies far past the final cut, or is a long fragment, and redacted).
    text = redact(text[: limit * 8], secret)
    if total > limit * 8 or len(text) > limit:
        text = f"{text[:limit]}... [cut: {total} characters in all]"
    return text


def scrub(value: Any, secret: str | None = None) -> Any:
    """``value`` (parsed JSON) with the token taken out of every string in it, keys too."""
    if isinstance(value, str):
        return redact(value, secret, fragment=DATA_FRAGMENT)
    if isinstance(value, Mapping):
        return {scrub(k, secret) if isinstance(k, str) else k: scrub(v, secret) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(item, secret) for item in value]
    return value


class _RedactTokenFilter(logging.Filter):
    """
    HTTP libraries log each request's URL (urllib3 at DEBUG, httpx at INFO) and, at DEBUG, the
    headers and status line of each answer (httpcore): any of them may carry a token. Every record
    of theirs is redacted by value.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a record whose arguments do not fit its format: keep it as it is
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True


_REDACT_FILTER = _RedactTokenFilter()


def redact_logs_of(*logger_names: str) -> None:
    """Take the token out of every record these loggers emit."""
    for name in logger_names:
        logger = logging.getLogger(name)
        if _REDACT_FILTER not in logger.filters:
            logger.addFilter(_REDACT_FILTER)


redact_logs_of(
    "urllib3",
    "urllib3.connectionpool",
    "urllib3.connection",
    "urllib3.response",
    "urllib3.util.retry",
    "requests",
)
redact_logs_of(
    "httpx", "httpcore", "httpcore.connection", "httpcore.http11", "httpcore.http2", "httpcore.proxy"
)
