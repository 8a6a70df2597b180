"""
A real Airflow API server (the UI and its API) in a throw-away home, for tests that drive the UI.

``AirflowApiServer`` migrates a fresh SQLite database in its own ``AIRFLOW_HOME``, starts
``airflow api-server`` on a free loopback port in its own process group, and stops the whole group
on ``stop()`` (also as a context manager, also when the start fails). Nothing of the caller's
Airflow settings reaches it: the environment is rebuilt without any ``AIRFLOW__*`` or
``AIRFLOW_CONN_*`` variable.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from helpers import airflow_cli

#: Who logs in to the UI, and with which password.
USERNAME = "admin"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def clean_environment(home: Path, **settings: str) -> dict[str, str]:
    """This process's environment without Airflow settings, plus an Airflow home in ``home``."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_")) and name != "AIRFLOW_CONFIG"
    }
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
        AIRFLOW__CORE__DAGS_FOLDER=str(home / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__TEST_CONNECTION="Enabled",
        AIRFLOW__LOGGING__BASE_LOG_FOLDER=str(home / "logs"),
        PYTHONUNBUFFERED="1",
    )
    env.update(settings)
    return env


class AirflowApiServer:
    """
    ``airflow api-server`` on ``127.0.0.1:<free port>``, with one admin user and connection testing on.

    :param home: an empty folder for ``AIRFLOW_HOME``; the database and the logs go there.
    :param start_timeout: seconds to wait for the server to answer its health check.
    """

    def __init__(self, home: Path, *, start_timeout: float = 180.0) -> None:
        self.home = home
        self.start_timeout = start_timeout
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.password = secrets.token_urlsafe(12)
        self.process: subprocess.Popen[bytes] | None = None
        (home / "dags").mkdir(parents=True, exist_ok=True)
        passwords = home / "passwords.json"
        passwords.write_text(json.dumps({USERNAME: self.password}))
        self.env = clean_environment(
            home,
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=f"{USERNAME}:admin",
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(passwords),
            AIRFLOW__API__HOST="127.0.0.1",
            AIRFLOW__API__PORT=str(self.port),
            AIRFLOW__API__BASE_URL=self.url,
            AIRFLOW__API__WORKERS="1",
            AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_hex(32),
        )
        self.log_path = home / "api-server.log"

    def airflow(self, *args: str, timeout: float = 300) -> str:
        """Run the ``airflow`` command line in this server's home; its output, or raise with it."""
        return airflow_cli.airflow(*args, env=self.env, timeout=timeout)

    def start(self) -> AirflowApiServer:
        """Migrate the database, start the server and wait until it answers."""
        self.airflow("db", "migrate")
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "airflow",
                    "api-server",
                    "--port",
                    str(self.port),
                    "--host",
                    "127.0.0.1",
                ],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so that stop() ends its workers too
            )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"airflow api-server exited with {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/v2/monitor/health", timeout=2) as answer:
                    if answer.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"airflow api-server did not answer within {self.start_timeout:g}s:\n{self.log()}")

    def log(self) -> str:
        """What the server printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        """Stop the server's whole process group: TERM, then KILL after 10 seconds."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        finally:
            # Workers that outlived their parent still belong to the group.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)

    def __enter__(self) -> AirflowApiServer:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()
