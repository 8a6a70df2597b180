"""
Make the connection **Test** button of Airflow 3.3.0 to 3.3.2 work for AhaChat connections.

The UI's Test button posts ``"port": 0`` for a connection saved without a port (it sends
``Number(connection.port)``, and ``Number(null)`` is 0). The route compares that 0 with the stored
``NULL``, takes it for "a different destination", and, since the UI sends the password masked,
answers 400 "The host or port to test differs from the stored connection". An AhaChat connection
has no port (its Base URL carries one when needed), so on those releases its Test button could
never work.

Airflow fixed this in its API (apache/airflow pull request 73298): there, a port of 0 means "no
port" when the request is compared with the stored connection. This middleware does exactly that,
and only that, before the route sees the request:

- only for ``POST .../api/v2/connections/test`` with a JSON body whose ``conn_type`` is ``ahachat``
  and whose ``port`` is the number 0: the port becomes ``null``. Every other request, and every
  other connection type, passes untouched;
- ``null`` matches only a stored connection without a port: the route's own rule (stored
  credentials are used only for the stored destination) is unchanged;
- it installs itself only where the route still has the bug: where Airflow already treats 0 as no
  port, or where the route's comparison is not there to check, it passes every request through.
  ``[ahachat] connection_test_port_fix = False`` turns it off.

It is registered through the ``airflow.plugins`` entry point, which Airflow loads with its default
settings; the API server adds it with the other plugins' middlewares (``fastapi_root_middlewares``).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from airflow.plugins_manager import AirflowPlugin

from airflow_provider_ahachat.inbound.airflow_internals import connection_test_route_refuses_port_0
from airflow_provider_ahachat.inbound.intake import Refused, parse_json

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The route of the Test button (under whatever prefix the API server is served).
TEST_ROUTE = "/api/v2/connections/test"
#: Bodies larger than this are passed on untouched: a connection test body is a few hundred bytes.
MAX_BODY = 256 * 1024


def fix_wanted() -> bool:
    """Whether ``[ahachat] connection_test_port_fix`` leaves the fix on (the default)."""
    from airflow_provider_ahachat.version_compat import conf

    return bool(conf().getboolean("ahachat", "connection_test_port_fix", fallback=True))


def rewrite_test_body(body: bytes) -> bytes | None:
    """
    The body with ``"port": 0`` as ``null``, for an AhaChat connection; None to leave it as it is
    (also any body that is not strict JSON: Airflow's route answers it, and nothing is rewritten).
    """
    try:
        data = parse_json(body)
    except Refused:
        return None
    if not isinstance(data, dict) or data.get("conn_type") != "ahachat":
        return None
    port = data.get("port")
    if type(port) is not int or port != 0:  # not False, not 0.5, not "0": only what the UI sends
        return None
    data["port"] = None
    return json.dumps(data).encode()


class ConnectionTestPortFix:
    """
    ASGI middleware: a Test of an AhaChat connection sends no port rather than port 0.

    :param app: the ASGI application it wraps (Airflow's API server).
    :param enabled: whether to act; None asks this Airflow whether its Test route needs it and
        whether ``[ahachat] connection_test_port_fix`` allows it.
    """

    def __init__(self, app: ASGIApp, enabled: bool | None = None) -> None:
        self.app = app
        self.enabled = fix_wanted() and connection_test_route_refuses_port_0() if enabled is None else enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not (
            self.enabled
            and scope["type"] == "http"
            and scope.get("method") == "POST"
            and scope.get("path", "").rstrip("/").endswith(TEST_ROUTE)
        ):
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        body = b""
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":  # the client went away
                break
            body += message.get("body", b"")
            if not message.get("more_body", False) or len(body) > MAX_BODY:
                break
        more = bool(messages) and messages[-1].get("more_body", False)
        new_body = None if more or len(body) > MAX_BODY else rewrite_test_body(body)
        if new_body is not None:
            messages = [{"type": "http.request", "body": new_body, "more_body": False}]
            headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(new_body)).encode()))
            scope = {**scope, "headers": headers}
        replay = iter(messages)

        async def replayed() -> Message:
            message = next(replay, None)
            return message if message is not None else await receive()

        await self.app(scope, replayed, send)


class AhaChatConnectionTestPlugin(AirflowPlugin):
    """Adds :class:`ConnectionTestPortFix` to Airflow's API server."""

    name = "ahachat_connection_test"
    fastapi_root_middlewares = [  # noqa: RUF012 - the attribute Airflow reads
        {"middleware": ConnectionTestPortFix, "args": [], "kwargs": {}, "name": "AhaChat connection Test fix"}
    ]
