"""
The delivery ledger on real object storage: Airflow's S3 filesystem against moto's S3 server, run
on 127.0.0.1 by the test. A task killed outright on one worker and retried on another (two
processes, sharing nothing but the bucket) messages nobody twice.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_bulk_faults import Task, communicate_or_kill, kill_with_requests_in_flight, users

from airflow_provider_ahachat.sandbox import SandboxServer

CONN = "s3_ledger"
BUCKET = "ahachat-ledger"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def s3_server() -> Iterator[str]:
    """moto's S3 server on a free loopback port, with an empty bucket; stopped by its process ID."""
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
                break
            except OSError:
                assert process.poll() is None, "moto's server exited"
                assert time.monotonic() < deadline, "moto's server did not start"
                time.sleep(0.1)
        request = urllib.request.Request(f"{endpoint}/{BUCKET}", method="PUT")
        urllib.request.urlopen(request, timeout=10).close()
        yield endpoint
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


@pytest.fixture
def s3_connection(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The Airflow connection to the bucket, as every process of the test sees it."""
    conn = {
        "conn_type": "aws",
        "login": "testing",
        "password": "testing",
        "extra": {"endpoint_url": s3_server, "region_name": "us-east-1"},
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN.upper()}", json.dumps(conn))
    return f"s3://{CONN}@{BUCKET}/ledger-{uuid.uuid4().hex[:8]}"


class S3Task(Task):
    """The killed-part-way task of ``test_bulk_faults``, with its ledger in the bucket."""

    def __init__(self, dag_id: str, sandbox: SandboxServer, ids: list[str], tmp_path: Path, ledger: str):
        super().__init__(dag_id, sandbox, ids, tmp_path, ledger=ledger)
        self.ledger_url = ledger

    def run(self) -> str:
        # Each claim batch is an object written to S3: slower than a local journal, and the child
        # process starts Airflow first; a generous bound for a busy machine.
        return communicate_or_kill(self.start(), 600)

    def s3_report(self) -> list[dict[str, Any]]:
        from airflow.sdk import ObjectStoragePath

        root = ObjectStoragePath(self.ledger_url)
        root.fs.invalidate_cache()  # the child process wrote it after this process listed the bucket
        (path,) = list(root.rglob("report.jsonl"))
        return [json.loads(line) for line in path.read_text().splitlines()]

    def journals(self) -> list[str]:
        from airflow.sdk import ObjectStoragePath

        root = ObjectStoragePath(self.ledger_url)
        root.fs.invalidate_cache()
        return [p.name for p in root.rglob("journal-*")]


@pytest.mark.slow
@pytest.mark.usefixtures("airflow_db")
def test_a_worker_killed_outright_and_the_retry_on_another_messages_nobody_twice(
    sandbox: SandboxServer, tmp_path: Path, s3_connection: str
) -> None:
    ids = sandbox.generate_users(200)
    task = S3Task("bulk_s3_killed", sandbox, ids, tmp_path, s3_connection)
    try:
        reached_first = kill_with_requests_in_flight(task, sandbox, after=50, total=200)
        first_journals = task.journals()
        assert first_journals  # the first worker's claims are in the bucket

        log = task.run()  # the retry, in another process: it knows only what the bucket holds
    finally:
        task.remove()
    counts = sandbox.outbox_counts()
    assert max(counts.values()) == 1, log[-3000:]  # nobody twice

    lines = task.s3_report()
    unknown, delivered = users(lines, outcome="unknown"), users(lines, outcome="delivered")
    # Each recipient is claimed as their request leaves (claims written in groups, each stored before
    # its requests leave): at most concurrency (8) unknown, those whose requests were leaving.
    assert len(unknown) <= 8
    assert unknown | delivered == set(ids) and not unknown & delivered
    assert delivered <= set(counts)
    assert set(counts) - delivered <= unknown
    assert users(lines, earlier_try=True, outcome="delivered") == reached_first - unknown
    assert len({name.split("-")[1] for name in task.journals()}) == 2  # two tries wrote journals
    assert sandbox.token not in log


def test_the_lease_lasts_as_configured_and_a_bad_value_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider_ahachat.bulk.setup import ledger_lease_seconds
    from airflow_provider_ahachat.exceptions import AhaChatValidationError

    monkeypatch.delenv("AIRFLOW__AHACHAT__LEDGER_LEASE_SECONDS", raising=False)
    assert ledger_lease_seconds() == 60.0
    monkeypatch.setenv("AIRFLOW__AHACHAT__LEDGER_LEASE_SECONDS", "15")
    assert ledger_lease_seconds() == 15.0
    for bad in ("2", "soon", "99999"):
        monkeypatch.setenv("AIRFLOW__AHACHAT__LEDGER_LEASE_SECONDS", bad)
        with pytest.raises(AhaChatValidationError, match=r"\[ahachat\] ledger_lease_seconds: .*5 to 3600"):
            ledger_lease_seconds()
