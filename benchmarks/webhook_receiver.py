"""
The webhook receiver under a steady load of signed calls, on ``airflow api-server`` as it runs.

One ``airflow api-server`` (its default single worker, free port, throw-away ``AIRFLOW_HOME``) with
the provider's plugin, on a metadata database of PostgreSQL (a throw-away cluster, as a production
deployment has; the default) or SQLite (as ``airflow standalone`` has: ``--database sqlite``); one
DAG scheduled on the event, so that each accepted call records an asset event and queues a run (no
scheduler runs: nothing consumes them). The load: ``--clients`` threads, each with its own
keep-alive ``requests.Session``, calling back to back for ``--duration`` seconds after a warm-up.
Three scenarios, in the same run:

- ``health``: ``GET /api/v2/monitor/health``, the API server's own cheapest route that reads the
  database (the floor);
- ``public route``: ``POST /api/v2/assets/events``, Airflow's own way to record the same event,
  with a real user's token (the baseline: the same work without the receiver's checks);
- ``receiver``: ``POST /ahachat/webhooks/<conn>/<event>`` with ``X-AhaChat-Secret`` and a JSON body
  of customer fields, as AhaChat's JSON API block sends it.

A call counts in the measured window when it ends in it, however long ago it started, so a route
whose calls take longer than the window still shows them (as slow, or as failed); calls still
running when the window closes are printed as ``late``. Printed: calls, accepted per second, p50
and p99 of the answer time, failures (by status) and the ratio of each scenario's accepted calls
per second to the public route's (``n/a`` if the public route accepted none). ``--json PATH``
writes the figures.

Run: ``uv run python benchmarks/webhook_receiver.py [--duration 20] [--clients 8] [--database sqlite]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from helpers.airflow_processes import AirflowProcesses  # noqa: E402
from helpers.postgres_fixtures import PostgresUnavailable, running_cluster  # noqa: E402

CONN_ID = "bench_bot"
EVENT = "order_status"
SECRET = "bench-secret-0f9d2c"
PASSWORD = "bench-password"
BODY = {"messenger_user_id": "3824547807572463", "order_code": "DH10231", "phone": "0908071111"}

DAG_FILE = f'''
from __future__ import annotations

from airflow.sdk import DAG, task

from airflow_provider_ahachat.events import ahachat_event

with DAG("bench_webhook_consumer", schedule=[ahachat_event("{EVENT}", ahachat_conn_id="{CONN_ID}")]):

    @task
    def noop() -> None:
        return None

    noop()
'''


@dataclass
class Result:
    """One scenario's calls that ended in the measured window (and those that ended after it)."""

    scenario: str
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    failures: int = 0
    late: int = 0
    statuses: dict[int, int] = field(default_factory=dict)

    def figures(self) -> dict[str, Any]:
        ok = sorted(self.latencies)
        return {
            "scenario": self.scenario,
            "calls": len(ok) + self.failures,
            "accepted": len(ok),
            "failures": self.failures,
            "late": self.late,
            "statuses": self.statuses,
            "accepted_per_second": len(ok) / self.seconds if self.seconds else 0.0,
            "p50_ms": 1000 * percentile(ok, 50),
            "p99_ms": 1000 * percentile(ok, 99),
            "mean_ms": 1000 * statistics.fmean(ok) if ok else 0.0,
        }


def percentile(values: list[float], p: float) -> float:
    """The ``p``-th percentile of sorted ``values`` (nearest rank), 0 for none."""
    if not values:
        return 0.0
    rank = max(1, math.ceil(p / 100 * len(values)))
    return values[min(rank, len(values)) - 1]


Call = Callable[[requests.Session, int], requests.Response]


def _one(call: Call, session: requests.Session, n: int) -> int:
    """One call's status; 0 when it did not get an answer."""
    try:
        return call(session, n).status_code
    except requests.RequestException:
        return 0


def load(scenario: str, call: Call, clients: int, warmup: float, duration: float) -> Result:
    """Run ``call`` back to back on ``clients`` threads; keep the calls that end in the window."""
    result = Result(scenario, seconds=duration)
    lock = threading.Lock()
    measure_from = time.monotonic() + warmup
    stop_at = measure_from + duration

    def client(number: int) -> None:
        session = requests.Session()
        n = 0
        while (began := time.monotonic()) < stop_at:
            status = _one(call, session, number * 10_000_000 + n)
            ended = time.monotonic()
            n += 1
            with lock:
                if ended > stop_at:
                    result.late += 1
                elif ended >= measure_from:
                    result.statuses[status] = result.statuses.get(status, 0) + 1
                    if status == 200:
                        result.latencies.append(ended - began)
                    else:
                        result.failures += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return result


@contextlib.contextmanager
def metadata_database(kind: str) -> Iterator[tuple[str, dict[str, str]]]:
    """The database the API server uses: its name and the settings that point Airflow at it."""
    if kind == "postgres":
        try:
            with running_cluster() as cluster:
                name = cluster.new_database()
                url = f"postgresql+psycopg2://postgres@127.0.0.1:{cluster.port}/{name}"
                yield "PostgreSQL", {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": url}
                return
        except PostgresUnavailable as why:
            print(f"PostgreSQL cannot run here ({why}); measuring on SQLite.", flush=True)
    yield "SQLite", {}


def scenarios(url: str, token: str, asset_id: int) -> dict[str, Call]:
    """The three ways to call the API server, by scenario name."""
    auth = {"Authorization": f"Bearer {token}"}

    def health(session: requests.Session, n: int) -> requests.Response:
        return session.get(f"{url}/api/v2/monitor/health", timeout=60)

    def public_route(session: requests.Session, n: int) -> requests.Response:
        extra = {**BODY, "n": n}
        return session.post(
            f"{url}/api/v2/assets/events",
            json={"asset_id": asset_id, "extra": extra},
            headers=auth,
            timeout=60,
        )

    def receiver(session: requests.Session, n: int) -> requests.Response:
        return session.post(
            f"{url}/ahachat/webhooks/{CONN_ID}/{EVENT}",
            json={**BODY, "n": n},
            headers={"X-AhaChat-Secret": SECRET},
            timeout=60,
        )

    return {"health": health, "public route": public_route, "receiver": receiver}


def measure(args: argparse.Namespace, tmp: Path) -> tuple[str, list[Result], str]:
    """Start Airflow on the chosen database, run every scenario; the database, results and server log."""
    home, dags = tmp / "home", tmp / "dags"
    dags.mkdir()
    (dags / "bench_webhook_consumer.py").write_text(DAG_FILE)
    conn = {
        "conn_type": "ahachat",
        "login": "12404829",
        "password": "unused",
        "extra": {"webhook_secret": SECRET, "webhook_events_per_minute": 0},
    }
    passwords = tmp / "passwords.json"
    passwords.write_text(json.dumps({"bench": PASSWORD}))
    with metadata_database(args.database) as (database, db_env):
        processes = AirflowProcesses(
            home,
            dags_folder=dags,
            command="api-server",
            env={
                f"AIRFLOW_CONN_{CONN_ID.upper()}": json.dumps(conn),
                # A real user and token, as in production: no middleware minting a token per call.
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "bench:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
                **db_env,
            },
        )
        print(f"Preparing Airflow on {database} (db migrate, dags reserialize)...", flush=True)
        processes.airflow("db", "migrate")
        processes.airflow("dags", "reserialize")
        with processes:
            url = processes.url
            token = requests.post(
                f"{url}/auth/token", json={"username": "bench", "password": PASSWORD}, timeout=120
            ).json()["access_token"]
            assets = requests.get(
                f"{url}/api/v2/assets?uri_pattern=ahachat",
                headers={"Authorization": f"Bearer {token}"},
                timeout=120,
            ).json()
            results = []
            for name, call in scenarios(url, token, assets["assets"][0]["id"]).items():
                print(f"  {name}: {args.clients} clients, {args.duration:.0f}s...", flush=True)
                results.append(load(name, call, args.clients, args.warmup, args.duration))
            return database, results, processes.log_tail(10**9)


def report(
    args: argparse.Namespace, database: str, results: list[Result], server_log: str
) -> list[dict[str, Any]]:
    """Print the table (and write the JSON); the figures."""
    figures = [r.figures() for r in results]
    base = next(f for f in figures if f["scenario"] == "public route")["accepted_per_second"]
    print(
        f"\nairflow api-server (1 worker, {database}), {args.clients} clients, {args.duration:.0f}s each, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"{'scenario':<14}{'calls':>7}{'accepted/s':>12}{'vs public':>11}{'p50 ms':>9}{'p99 ms':>9}"
        "  failed (status: n), late"
    )
    for f in figures:
        f["vs_public_route"] = f["accepted_per_second"] / base if base else None
        ratio = f"{f['vs_public_route']:.2f}x" if base else "n/a"
        failed = ", ".join(f"{s}: {n}" for s, n in sorted(f["statuses"].items()) if s != 200) or "0"
        print(
            f"{f['scenario']:<14}{f['calls']:>7}{f['accepted_per_second']:>12.1f}{ratio:>11}"
            f"{f['p50_ms']:>9.1f}{f['p99_ms']:>9.1f}  {failed}, {f['late']} late"
        )
    if args.json:
        document = {
            "database": database,
            "clients": args.clients,
            "duration": args.duration,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "figures": figures,
        }
        args.json.write_text(json.dumps(document, indent=2))
    errors = [line for line in server_log.splitlines() if "Error" in line or "error" in line]
    print(f"API server log: {server_log.count('database is locked')} 'database is locked'; last error lines:")
    for line in errors[-5:]:
        print(f"  {line[:200]}")
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per scenario")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before measuring")
    parser.add_argument("--clients", type=int, default=8, help="concurrent callers")
    parser.add_argument(
        "--database", choices=("postgres", "sqlite"), default="postgres", help="the metadata database"
    )
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ahachat-bench-webhook-") as tmp:
        database, results, server_log = measure(args, Path(tmp))
    receiver = report(args, database, results, server_log)[-1]
    return 0 if receiver["accepted"] and not receiver["failures"] else 1


if __name__ == "__main__":
    # A SIGTERM (a timeout, a cancelled job) unwinds as Ctrl-C does, so that the Airflow processes
    # started here are stopped by their context managers instead of left running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    raise SystemExit(main())
