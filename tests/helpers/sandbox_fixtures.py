"""
Pytest fixtures of the AhaChat sandbox, a real HTTP server on loopback.

- ``sandbox_server`` (session): one :class:`SandboxServer` on a free port for the whole run.
- ``sandbox`` (function): the same server, reset to the seed with default knobs before the test.
- ``sandbox_connection`` (function): ``sandbox``, with ``AIRFLOW_CONN_AHACHAT_DEFAULT`` pointing at it
  for the duration of the test.
- ``after_lookups`` (function): act as the customer once the code under test has looked the user up
  a given number of times.

Loaded for every test by ``tests/conftest.py`` (its ``pytest_plugins``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from airflow_provider_ahachat.sandbox import SandboxServer


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[SandboxServer]:
    """The sandbox for the whole test session; prefer ``sandbox``, which resets it."""
    with SandboxServer() as server:
        yield server


@pytest.fixture
def sandbox(sandbox_server: SandboxServer) -> SandboxServer:
    """The sandbox, back to its seed, knobs, empty outbox and zero counters."""
    sandbox_server.reset()
    return sandbox_server


@pytest.fixture
def sandbox_connection(sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> SandboxServer:
    """The reset sandbox, reachable as the Airflow connection ``ahachat_default``."""
    for name, value in sandbox.connection_env.items():
        monkeypatch.setenv(name, value)
    return sandbox


def user_lookups(sandbox: SandboxServer) -> list[dict[str, Any]]:
    """The find-user requests the sandbox answered (by ID or by phone), oldest first."""
    return [r for r in sandbox.request_log(limit=1000) if r["method"] == "GET" and "/users" in r["path"]]


@pytest.fixture
def after_lookups(sandbox: SandboxServer) -> Iterator[Callable[..., None]]:
    """
    ``after_lookups(n, fn, *args, **kwargs)`` calls ``fn`` on a thread once the sandbox has answered
    ``n`` find-user requests: a change that comes part-way through a wait, however long the code
    under test takes to start.
    """
    threads: list[threading.Thread] = []
    stop = threading.Event()

    def schedule(lookups: int, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        def act() -> None:
            while not stop.is_set() and len(user_lookups(sandbox)) < lookups:
                time.sleep(0.05)
            if not stop.is_set():
                fn(*args, **kwargs)

        thread = threading.Thread(target=act, name="ahachat-customer", daemon=True)
        threads.append(thread)
        thread.start()

    yield schedule
    stop.set()
    for thread in threads:
        thread.join(timeout=5)
