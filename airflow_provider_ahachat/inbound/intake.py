"""
What the plugin takes from a request, and what it says of it: one set of rules for every route.

- **Bodies** are read within :data:`MAX_BODY_BYTES` while they arrive (declared, streamed or
  chunked alike): :class:`BodyLimit` answers 413 for any route of the app before anything parses
  them, and :func:`read_body` does the same inside a route.
- **JSON** is parsed strictly (:func:`parse_json`): no ``NaN``, ``Infinity`` or number that
  overflows to infinity, no integer beyond 64 bits, no string that is not valid Unicode or holds
  U+0000, at most :data:`MAX_DEPTH` levels of arrays and objects (counted without recursion,
  before parsing); anything else is a 400. :func:`check_json` holds any value to the same rules
  (forms included) before it is stored.
- **Forms** (``application/x-www-form-urlencoded``, ``multipart/form-data``) are flat name/value
  text; they are held to the same string rules.
- **Logs** quote a request value only through :func:`loggable`: secrets masked (those registered
  with :func:`keep_secret`, and what Airflow's masker knows), control characters and line or
  paragraph separators escaped, at most :data:`PREVIEW` characters. :class:`LoggablePaths` does
  the same for the paths of the plugin's routes in the API server's access log.

Plain Python (Starlette) except :func:`keep_secret` and :func:`loggable`, which reach Airflow's
secret masker through :mod:`airflow_provider_ahachat.version_compat` when Airflow is there.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, quote

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_DEPTH",
    "PREVIEW",
    "BodyLimit",
    "Refused",
    "check_json",
    "escape",
    "keep_secret",
    "kept_secrets",
    "loggable",
    "masked",
    "parse_fields",
    "parse_json",
    "read_body",
]

#: The largest body any route of the plugin reads.
MAX_BODY_BYTES = 64 * 1024
#: The most levels of nested arrays and objects a JSON body may have (a flat object is 1).
MAX_DEPTH = 32
#: The most fields a form may have.
MAX_FIELDS = 1000
#: The most characters of a value a caller sent that a log line quotes.
PREVIEW = 16

_TOO_LARGE = f"body: larger than {MAX_BODY_BYTES // 1024} KiB"
_STRING_RULE = "strings must be valid Unicode without U+0000"


class Refused(Exception):
    """
    A request refused: its status, a message that quotes nothing the caller sent, and headers.

    :param status: the HTTP status.
    :param message: what was wrong, naming the field and the rule.
    :param headers: headers of the answer (``Retry-After``...).
    """

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


# --------------------------------------------------------------------------- bodies


def _declared_too_large(headers: Mapping[str, str], limit: int) -> bool:
    declared = headers.get("content-length")
    return declared is not None and declared.strip().isdigit() and int(declared) > limit


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """
    The request's body, read as it arrives; :class:`Refused` (413) as soon as it passes ``limit``.

    :param request: the request.
    :param limit: the most bytes accepted.
    """
    if _declared_too_large(request.headers, limit):
        raise Refused(413, _TOO_LARGE, {"Connection": "close"})
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Refused(413, _TOO_LARGE, {"Connection": "close"})
        chunks.append(chunk)
    return b"".join(chunks)


class BodyLimit:
    """
    ASGI middleware: every request's body is read, up to ``limit`` bytes, before the app sees it;
    past the limit (declared in ``Content-Length`` or counted while a chunked body arrives) the
    answer is 413 and the connection is closed, whatever the route, the method or the content type.

    :param app: the ASGI app it guards.
    :param limit: the most bytes a body may have.
    """

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if _declared_too_large(headers, self.limit):
            await _too_large(send)
            return
        first = await self._read(receive)
        if first is None:
            await _too_large(send)
            return
        await self.app(scope, _replaying(first, receive), send)

    async def _read(self, receive: Receive) -> Message | None:
        """The whole body as one message (or the disconnect that cut it); None past the limit."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return message
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}


def _replaying(first: Message, then: Receive) -> Receive:
    """A ``receive`` that gives ``first`` (the body, already read), then what ``then`` gives."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await then()
        sent = True
        return first

    return replay


async def _disconnected() -> Message:
    return {"type": "http.disconnect"}


async def _too_large(send: Send) -> None:
    body = json.dumps({"error": _TOO_LARGE}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


# --------------------------------------------------------------------------- strict JSON

_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")
#: The integers every reader of an event takes: Airflow hands events to tasks as msgpack, which
#: has no integer beyond 64 bits (a larger one fails the task that reads it).
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1


def nesting_depth(body: bytes) -> int:
    """How deep the arrays and objects of a JSON text go, counted without parsing or recursion."""
    brackets = _STRINGS.sub(b"", body).translate(None, _NOT_BRACKETS)
    if len(brackets) <= 1:
        return len(brackets)
    depth = deepest = 0
    for byte in brackets:
        depth += 1 if byte in b"[{" else -1
        deepest = max(deepest, depth)
    return deepest


def _refuse_constant(name: str) -> Any:
    raise Refused(400, f"body: {name} is not a JSON number; send finite numbers only")


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise Refused(400, "body: a number too large for a 64-bit float; send finite numbers only")
    return number


def parse_json(body: bytes) -> Any:
    """
    ``body`` parsed as strict JSON (UTF-8); :class:`Refused` (400) naming the rule it breaks.

    :param body: the body, already read within the size limit.
    """
    if nesting_depth(body) > MAX_DEPTH:
        raise Refused(400, f"body: nested deeper than {MAX_DEPTH} levels of arrays and objects")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused(400, "body: not UTF-8") from None
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite)
    except (ValueError, RecursionError):
        raise Refused(400, "body: not valid JSON; send a JSON object or form fields") from None
    check_json(value)
    return value


def _check_text(text: str) -> None:
    if _BAD_TEXT.search(text):
        raise Refused(400, f"body: {_STRING_RULE}")


def check_json(value: Any, max_depth: int = MAX_DEPTH) -> None:
    """
    Make sure ``value`` is JSON that any reader takes: finite numbers, integers within 64 bits, valid
    Unicode without U+0000 in keys and strings, at most ``max_depth`` levels; :class:`Refused` (400)
    otherwise. Iterative.

    :param value: the value, as parsed (or built from form fields).
    :param max_depth: the most levels of arrays and objects.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list | tuple):
            if depth > max_depth:
                raise Refused(400, f"body: nested deeper than {max_depth} levels of arrays and objects")
            stack.extend((child, depth + 1) for child in _children(item))
        else:
            _check_scalar(item)


def _children(container: dict[Any, Any] | list[Any] | tuple[Any, ...]) -> Iterable[Any]:
    """The values of an array or an object, its keys checked (strings, valid text) on the way."""
    if not isinstance(container, dict):
        return container
    for key in container:
        if not isinstance(key, str):
            raise Refused(400, "body: object keys must be strings")
        _check_text(key)
    return container.values()


def _check_scalar(item: Any) -> None:
    if isinstance(item, str):
        _check_text(item)
    elif isinstance(item, bool) or item is None:
        return
    elif isinstance(item, int):
        if not _INT_MIN <= item <= _INT_MAX:  # Airflow's task processes read events as msgpack
            raise Refused(400, "body: an integer beyond 64 bits; send it as a string")
    elif isinstance(item, float):
        if not math.isfinite(item):
            raise Refused(400, "body: send finite numbers only")
    else:
        raise Refused(400, f"body: a {type(item).__name__} is not a JSON value")


# --------------------------------------------------------------------------- fields


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _form_fields(body: bytes) -> dict[str, Any]:
    try:
        return dict(
            parse_qsl(
                body.decode("utf-8"), keep_blank_values=True, strict_parsing=False, max_num_fields=MAX_FIELDS
            )
        )
    except UnicodeDecodeError:
        raise Refused(400, "body: form fields must be UTF-8") from None
    except ValueError:
        raise Refused(400, f"body: more than {MAX_FIELDS} form fields") from None


async def _multipart_fields(request: Request, body: bytes) -> dict[str, Any]:
    # The body, already read within the size limit, parsed by Starlette's multipart parser.
    replay = _replaying({"type": "http.request", "body": body, "more_body": False}, _disconnected)
    try:
        async with Request(request.scope, replay).form(max_fields=MAX_FIELDS) as form:
            return {name: value for name, value in form.items() if isinstance(value, str)}
    except Exception:
        raise Refused(400, "body: not a readable multipart form") from None


async def parse_fields(request: Request, body: bytes) -> dict[str, Any]:
    """
    The body's fields: a JSON object (strict), or form fields; :class:`Refused` (400, 415) otherwise.

    :param request: the request (its ``Content-Type``).
    :param body: its body, already read within the size limit.
    """
    content_type = _content_type(request)
    if content_type == "application/x-www-form-urlencoded":
        fields = _form_fields(body)
    elif content_type == "multipart/form-data":
        fields = await _multipart_fields(request, body)
    elif content_type in ("", "application/json", "text/json") or content_type.endswith("+json"):
        fields = parse_json(body)
        if not isinstance(fields, dict):
            raise Refused(400, f"body: must be a JSON object, got a JSON {type(fields).__name__}")
        return fields
    else:
        raise Refused(
            415, "Content-Type: not accepted; send application/json or application/x-www-form-urlencoded"
        )
    check_json(fields)
    return fields


# --------------------------------------------------------------------------- logs

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def _escape_char(char: str) -> str:
    if char in _ESCAPES:
        return _ESCAPES[char]
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def escape(text: str) -> str:
    """
    ``text`` on one line, unambiguous: every character that is not printable (C0 and C1 controls,
    DEL, line and paragraph separators such as U+0085, U+2028 and U+2029, format characters such as
    U+202E, surrogates) and the backslash itself written as an escape (``\\n``, ``\\x85``, ``\\u2028``).
    """
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(c if c.isprintable() and c != "\\" else _escape_char(c) for c in text)


#: Every secret registered with :func:`keep_secret` in this process.
_kept: set[str] = set()


def keep_secret(secret: str | None) -> None:
    """
    Register ``secret`` (a webhook or approval secret, a Bot Token) to be masked: in every line the
    inbound code writes (:func:`loggable`) and by Airflow's secret masker.
    """
    if not secret or len(secret) < 4:
        return
    _kept.add(secret)
    if _airflow_loaded():
        from airflow_provider_ahachat.version_compat import mask_secret

        mask_secret(secret)


def kept_secrets() -> tuple[str, ...]:
    """Every secret registered with :func:`keep_secret` in this process."""
    return tuple(_kept)


def _airflow_loaded() -> bool:
    """Whether Airflow runs in this process (the API server): only then is its masker asked."""
    return "airflow.sdk" in sys.modules or "airflow.models" in sys.modules


def masked(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with ``secrets``, every secret registered with :func:`keep_secret` and what Airflow's
    masker knows replaced by ``***`` (as they are, and URL-encoded)."""
    for secret in sorted({*secrets, *kept_secrets()}, key=len, reverse=True):
        if secret:
            text = text.replace(secret, "***").replace(quote(secret, safe=""), "***")
    if _airflow_loaded():
        from airflow_provider_ahachat.version_compat import redact

        text = redact(text)
    return text


def loggable(value: Any, limit: int = PREVIEW, secrets: Iterable[str] = ()) -> str:
    """
    A value a caller sent, as a log line may quote it: secrets masked first (``secrets``, those
    registered with :func:`keep_secret`, as they are and URL-encoded, and what Airflow's masker
    knows), then at most ``limit`` characters, escaped onto one line; a longer value says how long
    it was.

    :param value: the value (anything: it is made text first).
    :param limit: the most characters quoted.
    :param secrets: more secrets to mask.
    """
    text = value if isinstance(value, str) else str(value)
    total = len(text)
    text = masked(text[: limit * 8], secrets)
    shown = escape(text[:limit])
    return shown if total <= limit and len(text) <= limit else f"{shown}…({total} characters)"


class LoggablePaths:
    """
    ASGI middleware for the whole API server: once a request to the plugin's routes (a path that
    starts with ``prefix``) is answered, its path is left in the request's scope as
    :func:`loggable` makes values (escaped onto one line, secrets masked), so that the access log
    line the server writes after it (Airflow's, which prints the decoded path) cannot be split or
    forged through the path, nor show a secret sent in it. Routing has happened by then.

    :param app: the ASGI app it wraps (Airflow's API server).
    :param prefix: the plugin's URL prefix, with its trailing slash.
    """

    def __init__(self, app: ASGIApp, prefix: str = "/ahachat/") -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path") if scope["type"] == "http" else None
        # Read before routing, which moves the mount's prefix into the scope's root_path.
        ours = isinstance(path, str) and path[len(scope.get("root_path", "")) :].startswith(self.prefix)
        try:
            await self.app(scope, receive, send)
        finally:
            if ours and isinstance(scope.get("path"), str):
                scope["path"] = escape(masked(scope["path"]))
