"""
Fixtures many test modules share (loaded for every test by ``tests/conftest.py``).

- ``server`` (function): a :class:`RecordingServer` on a free loopback port, answering ``200 {}``
  unless told otherwise, stopped after the test: what the code under test sent, exactly.
- ``elsewhere`` (function): a second one, for what must reach another origin (a redirect, a URL
  the bot calls) or must not.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from helpers.recording_server import RecordingServer


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
