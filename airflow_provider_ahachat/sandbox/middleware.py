"""
The knobs, as ASGI middleware: rate limit, latency and injected errors, plus the request log and stats.

Every request outside ``/_sandbox`` is an *API request*: it goes through the knobs, into the
request log and into the stats. The control API goes through none of them.

Order of the knobs for an API request: the rate limit first (a 429 with ``Retry-After`` at once,
nothing processed), then the latency, then an injected error from ``fail_next`` or
``error_rate``. An injected error is answered without processing the request, unless
``deliver_before_fail`` (or the fault's own ``deliver``) is true: then the request is processed as
usual (the message delivered, the tag added) and its answer replaced by the error, as when a
server fails after doing the work.

The knobs' values live in :class:`~.state.SandboxConfig`; their bookkeeping (the token bucket,
the fault queue) in :class:`~.state.SandboxState`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from http import HTTPStatus
from typing import Any

from starlette.routing import Match, Router

from airflow_provider_ahachat.sandbox.routes.control import CONTROL_PREFIX
from airflow_provider_ahachat.sandbox.state import SandboxState

#: Bytes of a request body kept in the request log.
_LOGGED_BODY = 65_536

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ApiKnobs:
    """
    Rate limit, latency, injected errors, request log and stats for every API request.

    Plain ASGI (no per-request task or copy), so that it costs microseconds.

    :param app: the ASGI app it wraps.
    :param state: the sandbox state holding the knobs, log and counters.
    :param router: the app's router, to name the route of requests the app never saw.
    """

    def __init__(self, app: ASGIApp, state: SandboxState, router: Router) -> None:
        self.app = app
        self.state = state
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(CONTROL_PREFIX):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state = self.state
        body = await _read_body(receive)
        if body is None:
            return
        record = state.log_request(scope["method"], scope["path"], scope["query_string"], body[:_LOGGED_BODY])
        status = 500
        note: str | None = None

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            retry_after = state.rate_limited()
            if retry_after:
                note = "rate_limited"
                status = 429
                await _answer(send, 429, "rate limited", retry_after)
                return
            if state.config.latency_ms > 0:
                await asyncio.sleep(state.config.latency_ms / 1000)
            fault = state.next_fault()
            if fault is None:
                await self.app(scope, _replay(body, receive), send_and_note)
                return
            if state.fault_delivers(fault):
                note = "injected_after_processing"
                await self.app(scope, _replay(body, receive), _discard)
            else:
                note = "injected"
            status = fault.status
            phrase = (
                HTTPStatus(fault.status).phrase if fault.status in HTTPStatus._value2member_map_ else "Error"
            )
            retry = state.config.retry_after if fault.status == 429 else None
            await _answer(send, fault.status, f"{phrase} (injected by the sandbox)", retry)
        finally:
            record.status = status
            record.note = note
            record.duration_ms = (time.perf_counter() - started) * 1000
            state.count(self._route(scope), status)

    def _route(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is None:
            for candidate in self.router.routes:
                match, _ = candidate.matches(scope)
                if match == Match.FULL:
                    route = candidate
                    break
        path = getattr(route, "path", None)
        return f"{scope['method']} {path}" if path else f"{scope['method']} (no route)"


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if delivered:
            return await receive()
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def _discard(message: Message) -> None:
    return None


async def _answer(send: Send, status: int, message: str, retry_after: int | None = None) -> None:
    body = json.dumps({"success": False, "message": message}, ensure_ascii=False).encode("utf-8")
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
