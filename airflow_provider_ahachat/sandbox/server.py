"""
Running the sandbox: in this process on a background thread, or as a child process.

:class:`SandboxServer` is the quick one for tests. :class:`SandboxProcess` runs
``python -m airflow_provider_ahachat.sandbox`` so that the sandbox has its own interpreter (and
GIL), as benchmarks and demos want. Both expose the same control helpers (:class:`SandboxControl`).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any
from urllib.parse import quote, urlencode, urlsplit

import uvicorn
from typing_extensions import Self

from airflow_provider_ahachat.sandbox.app import create_app
from airflow_provider_ahachat.sandbox.knobs import SandboxConfig
from airflow_provider_ahachat.sandbox.outbox import OutboxQuery
from airflow_provider_ahachat.sandbox.seed import build_bots, read_seed
from airflow_provider_ahachat.sandbox.state import SandboxState
from airflow_provider_ahachat.sandbox.world import ApiError, synthetic_user_id

#: The first line the sandbox prints, followed by its base URL.
READY_PREFIX = "AhaChat sandbox listening on "

DEFAULT_CONN_ID = "ahachat_default"


def url_host(host: str) -> str:
    """A host as it appears in a URL: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def connection_uri(url: str, bot_id: str, token: str) -> str:
    """
    The Airflow connection URI of a sandbox (or any AhaChat base URL).

    The URL's scheme goes into the path, which Airflow reads as the connection's ``schema``.

    :param url: the base URL, such as ``http://127.0.0.1:8790``.
    :param bot_id: the bot ID, the connection's login.
    :param token: the bot token, the connection's password.
    """
    parts = urlsplit(url)
    return f"ahachat://{quote(bot_id, safe='')}:{quote(token, safe='')}@{parts.netloc}/{parts.scheme}"


def connection_env_var(conn_id: str = DEFAULT_CONN_ID) -> str:
    """The environment variable Airflow reads a connection from, e.g. ``AIRFLOW_CONN_AHACHAT_DEFAULT``."""
    return f"AIRFLOW_CONN_{conn_id.upper()}"


def bind_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A TCP socket bound to ``host:port`` (0: a free port), ready to hand to uvicorn."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def socket_url(sock: socket.socket, host: str) -> str:
    """The base URL of a bound socket."""
    return f"http://{url_host(host)}:{sock.getsockname()[1]}"


def uvicorn_config(app: Any, log_level: str = "warning", *, configure_logging: bool = True) -> uvicorn.Config:
    """
    Uvicorn's settings for the sandbox: uvloop and httptools where installed, no access log.

    :param app: the ASGI app.
    :param log_level: uvicorn's log level.
    :param configure_logging: whether uvicorn installs its own logging configuration (not wanted
        inside another program, such as a test run).
    """
    extra: dict[str, Any] = {} if configure_logging else {"log_config": None}
    return uvicorn.Config(
        app,
        loop="auto",
        http="auto",
        lifespan="off",
        access_log=False,
        log_level=log_level,
        server_header=False,
        backlog=2048,
        timeout_graceful_shutdown=2,
        # Idle keep-alive connections stay open as long as at common API servers, so that clients
        # with connection pools rarely reuse one the server is closing.
        timeout_keep_alive=75,
        **extra,
    )


class SandboxControlError(RuntimeError):
    """
    A control request of the sandbox failed.

    :param status: the HTTP status, 0 if there was no answer.
    :param message: the sandbox's message.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"sandbox control request failed ({status}): {message}")
        self.status = status
        self.message = message


class SandboxControl:
    """
    Helpers over the control API (``/_sandbox``).

    The base of :class:`SandboxServer` and :class:`SandboxProcess`.

    :param seed: the seed the sandbox runs, for its bots' IDs and tokens.
    :param conn_id: the Airflow connection ID that :attr:`connection_env` names.
    """

    def __init__(self, seed: Mapping[str, Any], conn_id: str = DEFAULT_CONN_ID) -> None:
        self.seed = seed
        self.conn_id = conn_id
        self._url: str | None = None
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def start(self) -> Self:
        """Start the sandbox; return self."""
        raise NotImplementedError

    def stop(self) -> Any:
        """Stop the sandbox."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The base URL, such as ``http://127.0.0.1:40123``."""
        if self._url is None:
            raise RuntimeError("the sandbox is not running")
        return self._url

    @property
    def host(self) -> str:
        """The host the sandbox listens on."""
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        """The port the sandbox listens on."""
        return urlsplit(self.url).port or 0

    @property
    def tokens(self) -> dict[str, str]:
        """Every seeded bot's token, by bot ID."""
        return {bot["id"]: bot["token"] for bot in self.seed["bots"]}

    @property
    def bot_id(self) -> str:
        """The default (first) bot's ID."""
        return str(self.seed["bots"][0]["id"])

    @property
    def token(self) -> str:
        """The default bot's token."""
        return str(self.seed["bots"][0]["token"])

    @property
    def connection_uri(self) -> str:
        """The Airflow connection URI for the default bot, e.g. ``ahachat://12404829:<token>@127.0.0.1:8790/http``."""
        return connection_uri(self.url, self.bot_id, self.token)

    @property
    def connection_env(self) -> dict[str, str]:
        """``{"AIRFLOW_CONN_AHACHAT_DEFAULT": <connection_uri>}`` (for the configured connection ID)."""
        return {connection_env_var(self.conn_id): self.connection_uri}

    # -- the control API

    def control(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: Mapping[str, Any] | None = None,
        timeout: float = 30,
    ) -> Any:
        """
        Call the control API and return the answer's ``data``.

        :param method: the HTTP method.
        :param path: the path under ``/_sandbox``, such as ``/outbox``.
        :param body: a JSON body, if any.
        :param params: query parameters; ``None`` values are left out.
        :param timeout: seconds to wait for the answer.
        """
        query = {name: value for name, value in (params or {}).items() if value is not None}
        url = f"{self.url}/_sandbox{path}" + (f"?{urlencode(query)}" if query else "")
        data = None if body is None else json.dumps(body, ensure_ascii=False).encode("utf-8")
        request = urllib.request.Request(
            url, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with self._opener.open(request, timeout=timeout) as response:
                answer = json.loads(response.read() or b"null")
        except urllib.error.HTTPError as err:
            try:
                message = json.loads(err.read() or b"{}").get("message", err.reason)
            except ValueError:
                message = str(err.reason)
            raise SandboxControlError(err.code, str(message)) from None
        except (urllib.error.URLError, OSError) as err:
            raise SandboxControlError(0, str(err)) from None
        return answer.get("data") if isinstance(answer, dict) else answer

    def reset(self) -> None:
        """Back to the seed, the starting knobs, and empty outbox, log and stats."""
        self.control("POST", "/reset")

    def config(self) -> dict[str, Any]:
        """The current knobs."""
        return dict(self.control("GET", "/config"))

    def configure(self, **knobs: Any) -> dict[str, Any]:
        """
        Change knobs (``latency_ms``, ``rate_limit``, ``retry_after``, ``error_rate``, ``error_status``,
        ``deliver_before_fail``, ``fail_next``, ``messenger_rules``) and return all of them.
        """
        return dict(self.control("POST", "/config", knobs))

    def outbox(
        self,
        user_id: str | None = None,
        *,
        bot_id: str | None = None,
        since: int = 0,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """What the bots delivered, oldest first; see ``GET /_sandbox/outbox`` and :class:`OutboxQuery`."""
        query = OutboxQuery(user_id, bot_id, since, limit)
        return list(self.control("GET", "/outbox", params=query.params()))

    def outbox_counts(self, bot_id: str | None = None) -> dict[str, int]:
        """How many outbox entries each user has; see ``GET /_sandbox/outbox/counts``."""
        return dict(self.control("GET", "/outbox/counts", params={"bot_id": bot_id}))

    def generate_users(
        self, count: int, *, start: int = 0, in_window: bool = True, bot_id: str | None = None
    ) -> list[str]:
        """Add ``count`` numbered customers (see ``POST /_sandbox/users/generate``); return their IDs."""
        body = {"count": count, "start": start, "in_window": in_window}
        self.control("POST", "/users/generate", body, params={"bot_id": bot_id})
        return [synthetic_user_id(number) for number in range(start, start + count)]

    def users(self, bot_id: str | None = None) -> list[dict[str, Any]]:
        """Every user, of one bot or all."""
        return list(self.control("GET", "/users", params={"bot_id": bot_id}))

    def user(self, user_id: str, bot_id: str | None = None) -> dict[str, Any]:
        """One user, as the API shows them."""
        return dict(self.control("GET", f"/users/{user_id}", params={"bot_id": bot_id}))

    def update_user(self, user_id: str, bot_id: str | None = None, **changes: Any) -> dict[str, Any]:
        """
        Act as the customer: ``touch=True``, ``attributes={...}``, ``run_block="..."``...

        See ``PATCH /_sandbox/users/<id>``; answers the user.
        """
        return dict(self.control("PATCH", f"/users/{user_id}", changes, params={"bot_id": bot_id}))

    def set_json_api(
        self,
        block_name: str,
        steps: Sequence[Mapping[str, Any]] | Mapping[str, Any],
        bot_id: str | None = None,
    ) -> dict[str, Any]:
        """
        Give a block JSON API steps (``url``, ``method``, ``headers``, ``body``...), run when a
        customer reaches it; ``[]`` removes them. See ``PUT /_sandbox/json_api/<block>``.
        """
        body = [dict(steps)] if isinstance(steps, Mapping) else [dict(step) for step in steps]
        path = f"/json_api/{quote(block_name, safe='')}"
        return dict(self.control("PUT", path, {"steps": body}, params={"bot_id": bot_id}))

    def json_api_calls(self, limit: int = 100) -> list[dict[str, Any]]:
        """The last calls of JSON API steps, oldest first; see ``GET /_sandbox/json_api/calls``."""
        return list(self.control("GET", "/json_api/calls", params={"limit": limit}))

    def tap(
        self, user_id: str, title: str, seq: int | None = None, bot_id: str | None = None
    ) -> dict[str, Any]:
        """
        Tap, as the customer, the button titled ``title`` in their outbox entry ``seq`` (their
        latest by default); see ``POST /_sandbox/users/<id>/tap``.
        """
        body: dict[str, Any] = {"title": title} if seq is None else {"title": title, "seq": seq}
        path = f"/users/{quote(user_id, safe='')}/tap"
        return dict(self.control("POST", path, body, params={"bot_id": bot_id}, timeout=120))

    def add_user(self, user: Mapping[str, Any], bot_id: str | None = None) -> dict[str, Any]:
        """Add a user given in the seed's form."""
        return dict(self.control("POST", "/users", dict(user), params={"bot_id": bot_id}))

    def stats(self) -> dict[str, Any]:
        """Answered API requests by status and route."""
        return dict(self.control("GET", "/stats"))

    def request_log(self, limit: int = 100) -> list[dict[str, Any]]:
        """The last API requests, oldest first, the token redacted."""
        return list(self.control("GET", "/requests", params={"limit": limit}))


def _as_seed(seed: str | Path | Mapping[str, Any] | None) -> dict[str, Any]:
    if isinstance(seed, Mapping):
        build_bots(seed)  # raises SeedError if the seed is bad
        return dict(seed)
    return read_seed(seed)


def _as_config(config: SandboxConfig | Mapping[str, Any] | None) -> SandboxConfig:
    if isinstance(config, SandboxConfig):
        return config
    try:
        return SandboxConfig().updated(config or {})
    except ApiError as err:
        raise ValueError(f"config: {err.message}") from None


class SandboxServer(SandboxControl):
    """
    The sandbox on a background thread of this process.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`::

        with SandboxServer() as sandbox:
            os.environ.update(sandbox.connection_env)
            ...

    :param seed: a seed file, or a seed as a mapping; the packaged seed by default.
    :param host: the address to listen on.
    :param port: the port; 0 picks a free one.
    :param config: the starting knobs (a :class:`~.knobs.SandboxConfig` or a mapping of knobs),
        which :meth:`reset` returns to.
    :param log_level: uvicorn's log level.
    :param conn_id: the Airflow connection ID that :attr:`connection_env` names.
    :param startup_timeout: seconds to wait for the server to be ready.
    """

    def __init__(
        self,
        seed: str | Path | Mapping[str, Any] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        config: SandboxConfig | Mapping[str, Any] | None = None,
        log_level: str = "warning",
        conn_id: str = DEFAULT_CONN_ID,
        startup_timeout: float = 10.0,
    ) -> None:
        super().__init__(_as_seed(seed), conn_id)
        start_config = _as_config(config)
        #: The state the server serves. It belongs to the server's thread: read it for inspection
        #: only, and change it through the control API.
        self.state = SandboxState(self.seed, start_config)
        self.app = create_app(self.state)
        self.host_arg = host
        self.port_arg = port
        self.log_level = log_level
        self.startup_timeout = startup_timeout
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    def start(self) -> SandboxServer:
        """Start serving and wait until the server accepts requests."""
        if self._thread is not None:
            return self
        sock = bind_socket(self.host_arg, self.port_arg)
        server = uvicorn.Server(uvicorn_config(self.app, self.log_level, configure_logging=False))
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="ahachat-sandbox", daemon=True
        )
        self._socket, self._server, self._thread = sock, server, thread
        thread.start()
        deadline = time.monotonic() + self.startup_timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the sandbox server did not start")
            time.sleep(0.005)
        self._url = socket_url(sock, self.host_arg)
        return self

    def stop(self) -> None:
        """Stop serving and wait for the thread to end."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None
        self._url = None


class SandboxProcess(SandboxControl):
    """
    The sandbox as a child process: ``python -m airflow_provider_ahachat.sandbox --port 0 ...``.

    It reads the URL from the child's first line of output, and ends the child with SIGTERM (then
    SIGKILL if it lingers) on :meth:`stop`::

        with SandboxProcess(rate_limit=50) as sandbox:
            print(sandbox.url, sandbox.pid)

    :param seed: a seed file, or a seed as a mapping (written to a temporary file); the packaged
        seed by default.
    :param host: the address to listen on.
    :param port: the port; 0 picks a free one.
    :param latency_ms: the ``--latency-ms`` knob.
    :param rate_limit: the ``--rate-limit`` knob (requests per second, 0 off).
    :param error_rate: the ``--error-rate`` knob.
    :param error_status: the ``--error-status`` knob.
    :param messenger_rules: the ``--messenger-rules`` knob: ``"2026"`` or ``"2025"``; by default the
        child's ``AHACHAT_SANDBOX_MESSENGER_RULES``, else ``"2026"``.
    :param log_level: the child's uvicorn log level.
    :param extra_args: more command-line arguments for the child.
    :param python: the interpreter to run.
    :param env: the child's environment (this process's by default).
    :param conn_id: the Airflow connection ID that :attr:`connection_env` names.
    :param startup_timeout: seconds to wait for the child to print its URL.
    """

    def __init__(
        self,
        seed: str | Path | Mapping[str, Any] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency_ms: float = 0.0,
        rate_limit: float = 0.0,
        error_rate: float = 0.0,
        error_status: int = 503,
        messenger_rules: str | None = None,
        log_level: str = "warning",
        extra_args: Sequence[str] = (),
        python: str = sys.executable,
        env: Mapping[str, str] | None = None,
        conn_id: str = DEFAULT_CONN_ID,
        startup_timeout: float = 30.0,
    ) -> None:
        super().__init__(_as_seed(seed), conn_id)
        self._seed_path = None if seed is None or isinstance(seed, Mapping) else str(seed)
        self._seed_file: str | None = None
        options = {
            "--host": host,
            "--port": port,
            "--latency-ms": latency_ms,
            "--rate-limit": rate_limit,
            "--error-rate": error_rate,
            "--error-status": error_status,
            "--log-level": log_level,
            "--conn-id": conn_id,
            "--messenger-rules": messenger_rules,
        }
        self.args = [
            str(part) for name, value in options.items() if value is not None for part in (name, value)
        ]
        self.args += extra_args
        self._custom_seed = isinstance(seed, Mapping)
        self.python = python
        self.env = dict(env) if env is not None else None
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[str] | None = None
        #: The child's exit code once it stopped.
        self.returncode: int | None = None
        #: The child's last lines of standard output.
        self.output: deque[str] = deque(maxlen=200)
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader: threading.Thread | None = None

    @property
    def command(self) -> list[str]:
        """The child's command line."""
        seed = self._seed_file or self._seed_path
        return [
            self.python,
            "-m",
            "airflow_provider_ahachat.sandbox",
            *self.args,
            *(["--seed", seed] if seed else []),
        ]

    @property
    def pid(self) -> int | None:
        """The child's process ID while it runs."""
        return self.process.pid if self.process is not None else None

    def start(self) -> SandboxProcess:
        """Start the child and wait for its URL line."""
        if self.process is not None:
            return self
        self.returncode = None
        if self._custom_seed:
            handle, self._seed_file = tempfile.mkstemp(prefix="ahachat-sandbox-seed-", suffix=".json")
            with os.fdopen(handle, "w", encoding="utf-8") as file:
                json.dump(self.seed, file, ensure_ascii=False)
        env = dict(self.env if self.env is not None else os.environ)
        env["PYTHONIOENCODING"] = "utf-8"
        env["PYTHONUNBUFFERED"] = "1"
        self.process = subprocess.Popen(
            self.command,
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            encoding="utf-8",
            errors="replace",
            env=env,
        )
        self._lines = queue.Queue()
        self._reader = threading.Thread(
            target=self._read, args=(self.process.stdout,), name="ahachat-sandbox-output", daemon=True
        )
        self._reader.start()
        deadline = time.monotonic() + self.startup_timeout
        while self._url is None:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.stop()
                raise RuntimeError(f"the sandbox did not start within {self.startup_timeout:g} s") from None
            if line is None:
                code = self.process.wait()
                self.stop()
                raise RuntimeError(f"the sandbox exited with code {code} before it was ready")
            if line.startswith(READY_PREFIX):
                self._url = line[len(READY_PREFIX) :].strip()
        return self

    def _read(self, stdout: IO[str]) -> None:
        for raw in stdout:
            line = raw.rstrip("\n")
            self.output.append(line)
            if self._url is None:
                self._lines.put(line)
        self._lines.put(None)

    def stop(self, timeout: float = 10.0) -> int | None:
        """End the child (SIGTERM, then SIGKILL after ``timeout`` seconds); return its exit code."""
        process, self.process = self.process, None
        self._url = None
        code: int | None = None
        if process is not None:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            code = self.returncode = process.returncode
        if self._reader is not None:
            self._reader.join(timeout=5)
            self._reader = None
        if process is not None and process.stdout is not None:
            process.stdout.close()
        if self._seed_file is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._seed_file)
            self._seed_file = None
        return code
