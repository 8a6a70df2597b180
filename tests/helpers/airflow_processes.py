"""
Real Airflow processes for tests, benchmarks and the demo: ``airflow standalone`` or ``airflow
api-server`` alone, on a free port, with their own ``AIRFLOW_HOME``, stopped by process group.

.. code-block:: python

    with AirflowProcesses(home, dags_folder=dags, env={"AIRFLOW_CONN_SHOP": uri}) as airflow:
        airflow.wait_for_dag("my_dag")
        requests.post(f"{airflow.url}/ahachat/webhooks/shop/order_status", ...)

Facts this relies on (Airflow 3.3): tasks reach the API server through ``[core]
execution_api_server_url``, which must follow ``[api] port``; ``standalone`` runs ``airflow`` from
``PATH``; new DAGs are paused unless ``[core] dags_are_paused_at_creation`` is off; with
``[core] simple_auth_manager_all_admins`` every API request is an admin's, so the public API needs
no token here (Airflow 3.1 wants one all the same, and hands it out: see
``AirflowProcesses.auth_headers``). Everything waits by polling, with generous deadlines for a loaded
machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from helpers import airflow_cli
from helpers.started import Started

#: Seconds allowed for Airflow to start, on a loaded 2-core machine.
START_TIMEOUT = 900.0


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.25) -> Any:
    """Poll ``check`` until it returns something truthy; :class:`TimeoutError` naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


class AirflowProcesses(Started):
    """
    ``airflow standalone`` (or one other command, such as ``api-server``) in its own process group.

    :param home: the ``AIRFLOW_HOME``; its SQLite database and logs live there.
    :param dags_folder: the DAGs folder.
    :param env: more environment variables (connections, settings).
    :param command: the ``airflow`` subcommand: ``standalone``, or ``api-server`` (then run
        ``airflow("db", "migrate")`` first).
    :param start_timeout: seconds allowed to become ready.
    """

    def __init__(
        self,
        home: Path,
        *,
        dags_folder: Path,
        env: Mapping[str, str] | None = None,
        command: str = "standalone",
        start_timeout: float = START_TIMEOUT,
    ) -> None:
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = command
        self.start_timeout = start_timeout
        self.log_path = home / f"{command}.log"
        bin_dir = str(Path(sys.executable).parent)
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_")) and k != "AIRFLOW_CONFIG"
        }
        self.env = {
            **base,
            "PATH": f"{bin_dir}{os.pathsep}{base.get('PATH', '')}",
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__BASE_URL": self.url,
            # The scheduler and the triggerer serve task logs on fixed ports (8793, 8794) by default:
            # free ones, so that several of these can run at once.
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__COLORED_CONSOLE_LOG": "False",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            # A few task processes, not one per core-and-more: the machine may be small and busy.
            "AIRFLOW__CORE__PARALLELISM": "4",
            # A task's first call to the API server can be slow on a busy machine; the default timeout
            # makes it retry a call that went through, and the retry is refused ("not queued").
            "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "120",
            **dict(env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None
        #: What a request to the public API carries (a token where Airflow wants one).
        self.auth_headers: dict[str, str] = {}

    def start(self) -> AirflowProcesses:
        """Start the command and wait until the API server answers (and, standalone, the scheduler)."""
        if self.process is not None:
            # A second start would leave the first processes running with nobody to stop them.
            raise RuntimeError(f"airflow {self.command} is already started")
        self.home.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "airflow", self.command],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        try:
            wait_until(self._ready, self.start_timeout, f"airflow {self.command} on {self.url}", 0.5)
            token = self._all_admins_token()
            self.auth_headers = {"Authorization": f"Bearer {token}"} if token else {}
        except TimeoutError as err:
            self.stop()
            raise TimeoutError(f"{err}; its output ends with:\n{self.log_tail()}") from None
        except BaseException:
            self.stop()
            raise
        return self

    def airflow(self, *args: str, timeout: float = 600) -> str:
        """Run one ``airflow`` CLI command with this environment; its output."""
        return airflow_cli.airflow(*args, env=self.env, timeout=timeout)

    def _alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(
                f"airflow {self.command} exited with {self.process.returncode}:\n{self.log_tail()}"
            )

    def _ready(self) -> bool:
        self._alive()
        health = self.get_json("/api/v2/monitor/health")
        if health is None or self.get_json("/execution/health") is None:  # both apps loaded
            return False
        if self.command != "standalone":
            return True
        return all(
            (health.get(part) or {}).get("status") == "healthy" for part in ("scheduler", "dag_processor")
        )

    def _all_admins_token(self) -> str | None:
        """
        An admin's token for the public API: with ``[core] simple_auth_manager_all_admins`` Airflow
        3.1 still wants one on every request, and hands it out at ``GET /auth/token``; None where
        there is none to get (3.3 needs none).
        """
        try:
            with urllib.request.urlopen(f"{self.url}/auth/token", timeout=30) as answer:
                token = json.loads(answer.read()).get("access_token")
        except (OSError, ValueError, AttributeError):
            return None
        return token if isinstance(token, str) else None

    def get_json(self, path: str) -> Any:
        """The JSON answer of ``GET path`` on the API server, None if it does not answer 200."""
        try:
            request = urllib.request.Request(f"{self.url}{path}", headers=self.auth_headers)
            with urllib.request.urlopen(request, timeout=30) as answer:
                return json.loads(answer.read())
        except (OSError, ValueError, urllib.error.URLError):
            return None

    def wait_for_dag(self, dag_id: str, timeout: float = START_TIMEOUT) -> dict[str, Any]:
        """Wait until the DAG processor has parsed ``dag_id`` and it is not paused."""
        result: dict[str, Any] = wait_until(
            lambda: self._unpaused(dag_id), timeout, f"the DAG {dag_id} to be parsed", 0.5
        )
        return result

    def _unpaused(self, dag_id: str) -> dict[str, Any] | None:
        self._alive()
        dag = self.get_json(f"/api/v2/dags/{dag_id}")
        return dag if dag and not dag.get("is_paused") else None

    def asset(self, uri: str) -> dict[str, Any] | None:
        """The asset whose URI is ``uri``, as the public API shows it (with its consumers)."""
        answer = self.get_json(f"/api/v2/assets?uri_pattern={urllib.parse.quote(uri, safe='')}&limit=100")
        found = [a for a in (answer or {}).get("assets", []) if a.get("uri") == uri]
        return found[0] if found else None

    def wait_for_asset_consumer(
        self, uri: str, dag_id: str, timeout: float = START_TIMEOUT
    ) -> dict[str, Any]:
        """
        Wait until ``dag_id`` is parsed, unpaused and among the DAGs scheduled on the asset ``uri``.

        Only then does an event of the asset queue a run of the DAG: Airflow queues an event for the
        consumers it knows, unpaused, when the event is recorded, and never for one that comes later.
        """

        def consuming() -> dict[str, Any] | None:
            asset = self.asset(uri)
            dags = {d.get("dag_id") for d in (asset or {}).get("scheduled_dags", [])}
            return asset if dag_id in dags and self._unpaused(dag_id) else None

        result: dict[str, Any] = wait_until(
            consuming, timeout, f"the DAG {dag_id} to be parsed, unpaused and scheduled on {uri}", 0.5
        )
        return result

    def asset_report(self, dag_id: str, uri: str) -> str:
        """
        What Airflow holds about a DAG scheduled on an asset, to tell why a run is missing: the DAG,
        the asset and its consumers, its events and the runs they triggered, the DAG's queued events,
        and each run with the events it took and its task instances.
        """
        dag = self.get_json(f"/api/v2/dags/{dag_id}")
        lines = [
            f"DAG {dag_id}: "
            + (
                json.dumps({k: dag.get(k) for k in ("is_paused", "is_stale", "has_import_errors")})
                if dag
                else "not found"
            )
        ]
        asset = self.asset(uri)
        if asset is None:
            lines.append(f"asset {uri}: not found")
        else:
            consumers = [d.get("dag_id") for d in asset.get("scheduled_dags", [])]
            lines.append(f"asset {uri} (id {asset['id']}): scheduled DAGs {consumers}")
            events = self.get_json(
                f"/api/v2/assets/events?asset_id={asset['id']}&limit=100&order_by=timestamp"
            )
            for event in (events or {}).get("asset_events", []):
                runs = [r.get("run_id") for r in event.get("created_dagruns", [])]
                lines.append(
                    f"  event {event['id']} at {event['timestamp']}: {event.get('extra')}; runs {runs}"
                )
        queued = self.get_json(f"/api/v2/dags/{dag_id}/assets/queuedEvents")
        lines.append(f"queued for {dag_id}: {(queued or {}).get('queued_events', [])}")
        for run in self.dag_runs(dag_id):
            run_id = run["dag_run_id"]
            taken = self.get_json(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/upstreamAssetEvents")
            lines.append(
                f"run {run_id}: {run['state']} ({run['run_type']}, run_after {run.get('run_after')}); events "
                + str([e["id"] for e in (taken or {}).get("asset_events", [])])
            )
            tis = self.get_json(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=100")
            for ti in (tis or {}).get("task_instances", []):
                lines.append(
                    f"  {ti['task_id']}[{ti.get('map_index')}]: {ti.get('state')}"
                    f" (try {ti.get('try_number')})"
                )
        return "\n".join(lines)

    def dag_runs(self, dag_id: str) -> list[dict[str, Any]]:
        """The DAG's runs, as the public API lists them."""
        answer = self.get_json(f"/api/v2/dags/{dag_id}/dagRuns?limit=100&order_by=run_after")
        return list(answer["dag_runs"]) if answer else []

    def log_tail(self, size: int = 6000) -> str:
        """The end of the command's output."""
        try:
            return self.log_path.read_text(errors="replace")[-size:]
        except OSError:
            return ""

    def stop(self, timeout: float = 60.0) -> None:
        """Stop the whole process group: SIGTERM, then SIGKILL whatever is left after ``timeout``."""
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=timeout)
        # Children (scheduler, API server, task processes) share the group; leave none behind.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _group_alive(process.pid):
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
