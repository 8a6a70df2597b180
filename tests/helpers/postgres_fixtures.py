"""
A throw-away PostgreSQL cluster for the tests: Debian's ``postgresql`` (``scripts/test.sh`` installs
it when missing), initialised in a temporary folder and started on 127.0.0.1 on a free port.

- ``postgres`` (session): one cluster per test process (so one per pytest-xdist worker), stopped
  and deleted when the session ends, even when tests fail. Skips the tests that use it, saying
  why, when PostgreSQL is not installed.
- ``postgres.new_database()``: a database of its own for each test.
- :func:`running_cluster`: the same cluster as a context manager, for scripts and benchmarks.

As root (CI), ``initdb`` and the server run as the ``postgres`` user, through ``runuser``.
Loaded for every test by ``tests/conftest.py`` (its ``pytest_plugins``).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest


def bin_dir() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl``: Debian keeps them out of PATH."""
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (folder / "initdb").exists() and (folder / "pg_ctl").exists():
            return folder
    found = shutil.which("pg_ctl")
    if found and (Path(found).parent / "initdb").exists():
        return Path(found).parent
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PostgresCluster:
    """A running cluster: ``port``, superuser ``postgres`` without a password (trust, loopback only)."""

    port: int
    folder: Path
    _created: list[str] = field(default_factory=list)

    def connect(self, database: str = "postgres") -> Any:
        import psycopg2

        return psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=database)

    def uri(self, database: str) -> str:
        """An Airflow connection URI for ``database``."""
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A new, empty database; its name."""
        name = f"t{len(self._created) + 1}_{uuid.uuid4().hex[:8]}"
        self._created.append(name)
        conn = self.connect()
        try:
            conn.autocommit = True
            with conn.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return name

    def new_database_with(self, create: str, insert: str, rows: Iterable[Sequence[Any]]) -> str:
        """A new database holding one table: ``create`` it, then ``insert`` each row; its name."""
        name = self.new_database()
        conn = self.connect(name)
        try:
            with conn, conn.cursor() as cursor:
                cursor.execute(create)
                cursor.executemany(insert, list(rows))
        finally:
            conn.close()
        return name


def _as_postgres(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


class PostgresUnavailable(RuntimeError):
    """PostgreSQL cannot run here; the message says why."""


@contextlib.contextmanager
def running_cluster() -> Iterator[PostgresCluster]:
    """
    A throw-away PostgreSQL cluster on 127.0.0.1, stopped and deleted on the way out, even on a
    failure. :class:`PostgresUnavailable` when it cannot run here.
    """
    folder = bin_dir()
    if folder is None:
        raise PostgresUnavailable(
            "PostgreSQL is not installed (scripts/test.sh installs Debian's postgresql as root)"
        )
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            raise PostgresUnavailable(
                "running as root, and there is no postgres user to run PostgreSQL as"
            ) from None
    home = Path(tempfile.mkdtemp(prefix="ahachat-pg-"))
    data = home / "data"
    if os.geteuid() == 0:
        os.chown(home, owner.pw_uid, owner.pw_gid)
    pg_ctl = str(folder / "pg_ctl")
    started = False
    try:
        subprocess.run(
            _as_postgres(
                [str(folder / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                 "--locale=C", "--no-sync"]
            ),
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        for _ in range(3):  # another process may take the free port first
            port = _free_port()
            options = f"-c listen_addresses=127.0.0.1 -p {port} -k {home} -c fsync=off -c max_connections=50"
            log = str(home / "log")
            start = subprocess.run(
                _as_postgres([pg_ctl, "-D", str(data), "-l", log, "-o", options, "-w", "-t", "60", "start"]),
                capture_output=True, text=True, timeout=90,
            )  # fmt: skip
            started = True  # even a failed start may have left a server behind: always stop
            if start.returncode == 0:
                break
        else:
            tail = (home / "log").read_text(errors="replace")[-2000:] if (home / "log").exists() else ""
            raise RuntimeError(f"PostgreSQL did not start: {start.stderr}\n{tail}")
        yield PostgresCluster(port, home)
    finally:
        if started:
            stop = subprocess.run(
                _as_postgres([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "-t", "30", "stop"]),
                capture_output=True, timeout=60,
            )  # fmt: skip
            pid_file = data / "postmaster.pid"
            if stop.returncode != 0 and pid_file.exists():
                with contextlib.suppress(ValueError, OSError):
                    os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """A PostgreSQL cluster of this test process; see the module's docstring."""
    try:
        with running_cluster() as cluster:
            yield cluster
    except PostgresUnavailable as why:  # raised before the cluster exists: nothing to stop
        pytest.skip(str(why))
