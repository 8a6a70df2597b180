"""
Two real processes racing on one ledger (a zombie and its retry): a local folder held by a lock,
and a ``file://`` object storage path held by a lease. Nobody may be messaged twice.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.recording_server import Recorded, RecordingServer, Reply

RACER = Path(__file__).resolve().parents[1] / "helpers" / "ledger_racer.py"
TOKEN = "race0f3c9a7e5b1d4f2a8c6e0b9d7f5a3c1e"
ROWS = 40


class GatedServer(RecordingServer):
    """Answers nothing until ``gate`` is open: the first run is still sending for as long as needed."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.responder = self._answer

    def _answer(self, recorded: Recorded) -> Reply:
        self.gate.wait(120)
        return Reply()


@pytest.fixture
def server() -> Iterator[GatedServer]:
    srv = GatedServer()
    srv.start()
    yield srv
    srv.gate.set()
    srv.stop()


Start = Callable[..., tuple[subprocess.Popen[bytes], Path]]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    """Starts a racer process; every one still running at the end is killed, with its group."""
    started: list[subprocess.Popen[bytes]] = []
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow_home")}

    def _start(url: str, folder: str, *options: str) -> tuple[subprocess.Popen[bytes], Path]:
        out = tmp_path / f"out-{len(started)}.json"
        command = [
            sys.executable,
            str(RACER),
            url,
            TOKEN,
            folder,
            str(out),
            *options,
        ]
        process = subprocess.Popen(
            command, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        started.append(process)
        return process, out

    yield _start
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def folder_for(kind: str, tmp_path: Path) -> tuple[str, list[str]]:
    """The ledger folder argument and the racer options for a kind of ledger."""
    if kind == "local folder, lock":
        return str(tmp_path / "ledger"), []
    return f"file://{tmp_path / 'ledger'}", ["--lease"]


def wait_for(condition: Callable[[], bool], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def finish(process: subprocess.Popen[bytes], out: Path, timeout: float = 180.0) -> dict[str, Any]:
    process.wait(timeout=timeout)
    assert process.returncode == 0, process.stderr.read().decode() if process.stderr else ""
    result: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return result


def sends(server: RecordingServer) -> Counter[str]:
    return Counter(r.path for r in server.requests if r.method == "POST")


KINDS = ["local folder, lock", "file:// object storage, lease"]


def two_runs(
    server: GatedServer, start: Start, tmp_path: Path, kind: str, wait: float
) -> tuple[tuple[subprocess.Popen[bytes], Path], tuple[subprocess.Popen[bytes], Path]]:
    """Start a run that holds the ledger and sends, then a second run on the same ledger.

    :param wait: how long the second run may wait for the ledger (``--wait``).
    """
    folder, options = folder_for(kind, tmp_path)
    first = start(server.url, folder, f"--rows={ROWS}", *options)
    wait_for(lambda: len(server.requests) >= 1)  # the first run holds the ledger and sends
    second = start(server.url, folder, f"--rows={ROWS}", f"--wait={wait}", *options)
    return first, second


@pytest.mark.parametrize("kind", KINDS)
def test_a_second_run_that_cannot_wait_fails_naming_the_holder_and_sends_nothing(
    server: GatedServer, start: Start, tmp_path: Path, kind: str
) -> None:
    (first, first_out), (second, second_out) = two_runs(server, start, tmp_path, kind, wait=0.5)
    refused = finish(second, second_out)
    server.gate.set()
    done = finish(first, first_out)

    assert refused["error"] == "busy"
    assert f"pid {done['pid']}" in refused["holder"] and f"pid {done['pid']}" in refused["message"]
    assert done["summary"]["outcomes"] == {"delivered": ROWS}
    counts = sends(server)
    assert len(counts) == ROWS and set(counts.values()) == {1}  # everyone once, nobody twice


@pytest.mark.parametrize("kind", KINDS)
def test_a_second_run_that_waits_sends_to_no_one_the_first_reached(
    server: GatedServer, start: Start, tmp_path: Path, kind: str
) -> None:
    (first, first_out), (second, second_out) = two_runs(server, start, tmp_path, kind, wait=60)
    assert second.stdout is not None
    while second.stdout.readline().strip() != b"ready":  # Airflow may log to stdout before
        assert second.poll() is None
    time.sleep(1.0)  # the second run is waiting for the ledger now
    assert second.poll() is None
    server.gate.set()
    done = finish(first, first_out)
    after = finish(second, second_out)

    assert done["summary"]["outcomes"] == {"delivered": ROWS}
    assert after["summary"]["outcomes"] == {"delivered": ROWS}
    counts = sends(server)
    assert len(counts) == ROWS and set(counts.values()) == {1}


@pytest.mark.parametrize("kind", KINDS)
def test_the_hold_of_a_killed_run_ends_and_its_claims_are_kept(
    server: GatedServer, start: Start, tmp_path: Path, kind: str
) -> None:
    folder, options = folder_for(kind, tmp_path)
    first, _ = start(server.url, folder, f"--rows={ROWS}", "--ttl=2", *options)
    server.gate.set()
    wait_for(lambda: len(server.requests) >= 8)
    os.killpg(first.pid, signal.SIGKILL)  # a worker lost: no chance to let go of the ledger
    first.wait(timeout=10)
    sent_before = len(sends(server))
    second, second_out = start(server.url, folder, f"--rows={ROWS}", "--wait=30", *options)
    after = finish(second, second_out)
    assert after.get("error") != "busy", after  # the hold ended with its holder (a lease once expired)

    counts = sends(server)
    assert set(counts.values()) == {1}  # nobody twice, whatever the kill left unknown
    outcomes = (after.get("summary") or {}).get("outcomes", {})
    assert sum(outcomes.values()) == ROWS and outcomes.get("delivered", 0) >= sent_before
    assert outcomes.get("delivered", 0) + outcomes.get("unknown", 0) == ROWS
