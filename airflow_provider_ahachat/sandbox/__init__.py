"""
A local, in-memory AhaChat for tests, demos and benchmarks.

It implements the API contract the provider's client follows (the Broadcast API, and the
provisional endpoints for users, tags, attributes and messages), with the same input rules, plus a
control API under ``/_sandbox`` to read what the bot delivered, act as a customer, and inject
latency, rate limits and errors. See :mod:`.app` for how it is put together, :mod:`.routes` for
the endpoints, :mod:`.middleware` for the knobs and :mod:`.seed` for the seed.

Run it with ``python -m airflow_provider_ahachat.sandbox`` (``--help`` for the options), or from
Python with :class:`SandboxServer` (a background thread) or :class:`SandboxProcess` (a child
process). Nothing else in the provider imports this package.
"""

from __future__ import annotations

from airflow_provider_ahachat.sandbox.app import create_app
from airflow_provider_ahachat.sandbox.knobs import SandboxConfig
from airflow_provider_ahachat.sandbox.seed import DEFAULT_SEED_PATH, SeedError, read_seed
from airflow_provider_ahachat.sandbox.server import (
    READY_PREFIX,
    SandboxControl,
    SandboxControlError,
    SandboxProcess,
    SandboxServer,
    connection_env_var,
    connection_uri,
)
from airflow_provider_ahachat.sandbox.state import SandboxState

__all__ = [
    "DEFAULT_SEED_PATH",
    "READY_PREFIX",
    "SandboxConfig",
    "SandboxControl",
    "SandboxControlError",
    "SandboxProcess",
    "SandboxServer",
    "SandboxState",
    "SeedError",
    "connection_env_var",
    "connection_uri",
    "create_app",
    "read_seed",
]
