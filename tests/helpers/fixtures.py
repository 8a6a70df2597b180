"""
Fixtures many test modules share (loaded for every test by ``tests/conftest.py``).

- ``server`` (function): a :class:`RecordingServer` on a free loopback port, answering ``200 {}``
  unless told otherwise, stopped after the test: what the code under test sent, exactly.
- ``elsewhere`` (function): a second one, for what must reach another origin (a redirect, a URL
  the bot calls) or must not.
- ``third`` (function, one per kind of run for many): 12 customers of the sandbox, every third
  outside Messenger's 24-hour window (:class:`helpers.window_helpers.ThirdOutside`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_ahachat.sandbox import SandboxServer
from helpers.recording_server import RecordingServer
from helpers.window_helpers import MANY_SENDS, ThirdOutside, third_outside


def _recording() -> Iterator[RecordingServer]:
    server = RecordingServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    """A recording server, stopped after the test."""
    yield from _recording()


@pytest.fixture
def elsewhere() -> Iterator[RecordingServer]:
    """Another recording server: another origin."""
    yield from _recording()


@pytest.fixture(params=MANY_SENDS)
def third(request: pytest.FixtureRequest, sandbox: SandboxServer, tmp_path: Path) -> ThirdOutside:
    """12 customers, every third outside the window (:func:`third_outside`), for each kind of send."""
    return ThirdOutside(request.param, *third_outside(sandbox, tmp_path, request.param))
