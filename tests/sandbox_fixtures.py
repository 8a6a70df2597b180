"""
Pytest fixtures of the AhaChat sandbox, a real HTTP server on loopback.

- ``sandbox_server`` (session): one :class:`SandboxServer` on a free port for the whole run.
- ``sandbox`` (function): the same server, reset to the seed with default knobs before the test.
- ``sandbox_connection`` (function): ``sandbox``, with ``AIRFLOW_CONN_AHACHAT_DEFAULT`` pointing at it
  for the duration of the test.

Load them with ``pytest_plugins = ["sandbox_fixtures"]`` (the ``tests`` folder is on ``sys.path``).
"""

from __future__ import annotations

from collections.abc import Iterator

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
