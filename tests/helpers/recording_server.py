"""
A small HTTP server for tests: records each request exactly as it arrived, answers from a script.

It can misbehave as a hostile or broken server would: any status and reason phrase, any headers
(a redirect's ``Location``), a body of any size, a raw answer written byte for byte (a garbage
status line), or an answer computed from the request (``responder``).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit


@dataclass
class Recorded:
    """One request as the server received it."""

    method: str
    raw_path: str  # path and query, still percent-encoded, exactly as sent
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes
    client_port: int

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class Reply:
    """What to answer to one request."""

    status: int = 200
    body: Any = field(default_factory=lambda: {"success": True, "data": {}})
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False  # close the connection without answering
    reason: str | None = None  # the status line's reason phrase, instead of the standard one
    raw: bytes | None = None  # written as the whole answer, byte for byte, then the connection closes


class RecordingServer:
    """
    Records requests on 127.0.0.1 and answers each with the next scripted :class:`Reply`
    (or ``default`` once the script is used up).
    """

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.script: deque[Reply] = deque()
        self.default = Reply()
        #: Answers each request instead of the script, when set.
        self.responder: Callable[[Recorded], Reply] | None = None
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                recorded = Recorded(
                    method=self.command,
                    raw_path=self.path,
                    path=parts.path,
                    query=parse_qsl(parts.query, keep_blank_values=True),
                    headers=dict(self.headers.items()),
                    body=body,
                    client_port=self.client_address[1],
                )
                recorder.requests.append(recorded)
                if recorder.responder is not None:
                    reply = recorder.responder(recorded)
                else:
                    reply = recorder.script.popleft() if recorder.script else recorder.default
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.drop:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if reply.raw is not None:
                    self.close_connection = True
                    self.wfile.write(reply.raw)
                    self.wfile.flush()
                    return
                payload = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
                self.send_response(reply.status, reply.reason)
                if "Content-Type" not in reply.headers:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    def start(self) -> RecordingServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def answer(self, *replies: Reply) -> None:
        self.script.extend(replies)
