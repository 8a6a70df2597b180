"""
The webhook receiver under a steady load of signed calls, on ``airflow api-server`` as it runs.

One ``airflow api-server`` (its default single worker, SQLite metadata database in a throw-away
``AIRFLOW_HOME``, free port) with the provider's plugin; one DAG scheduled on the event, so that
each accepted call records an asset event and queues a run (no scheduler runs: nothing consumes
them). The load: ``--clients`` threads, each with its own keep-alive ``requests.Session``, calling
back to back for ``--duration`` seconds after a warm-up. Three scenarios, in the same run:

- ``health``: ``GET /api/v2/monitor/health``, the API server's own cheapest route that reads the
  database (the floor);
- ``public route``: ``POST /api/v2/assets/events``, Airflow's own way to record the same event
  (the baseline: the same work without the receiver's checks);
- ``receiver``: ``POST /ahachat/webhooks/<conn>/<event>`` with ``X-AhaChat-Secret`` and a JSON body
  of customer fields, as AhaChat's JSON API block sends it.

Printed: calls, accepted per second, p50 and p99 of the answer time, failures, and the ratio of
each to the public route. ``--json PATH`` writes the figures.

Run: ``uv run python benchmarks/webhook_receiver.py [--duration 20] [--clients 8]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from airflow_processes import AirflowProcesses  # noqa: E402

CONN_ID = "bench_bot"
EVENT = "order_status"
SECRET = "bench-secret-0f9d2c"
PASSWORD = "bench-password"

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
    """One scenario's calls."""

    scenario: str
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    failures: int = 0
    statuses: dict[int, int] = field(default_factory=dict)

    def figures(self) -> dict[str, Any]:
        ok = sorted(self.latencies)
        return {
            "scenario": self.scenario,
            "calls": len(ok) + self.failures,
            "accepted": len(ok),
            "failures": self.failures,
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


def load(
    scenario: str,
    call: Callable[[requests.Session, int], requests.Response],
    clients: int,
    warmup: float,
    duration: float,
) -> Result:
    """Run ``call`` back to back on ``clients`` threads; keep what happened after the warm-up."""
    result = Result(scenario)
    lock = threading.Lock()
    start = time.monotonic()
    measure_from = start + warmup
    stop_at = measure_from + duration

    def client(number: int) -> None:
        session = requests.Session()
        n = 0
        while True:
            began = time.monotonic()
            if began >= stop_at:
                return
            try:
                answer = call(session, number * 10_000_000 + n)
                ok = answer.status_code == 200
                status = answer.status_code
            except requests.RequestException:
                ok, status = False, 0
            took = time.monotonic() - began
            n += 1
            if began < measure_from:
                continue
            with lock:
                result.statuses[status] = result.statuses.get(status, 0) + 1
                if ok:
                    result.latencies.append(took)
                else:
                    result.failures += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.seconds = duration
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per scenario")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before measuring")
    parser.add_argument("--clients", type=int, default=8, help="concurrent callers")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="ahachat-bench-webhook-") as tmp:
        home, dags = Path(tmp) / "home", Path(tmp) / "dags"
        dags.mkdir()
        (dags / "bench_webhook_consumer.py").write_text(DAG_FILE)
        conn = {
            "conn_type": "ahachat",
            "login": "12404829",
            "password": "unused",
            "extra": {"webhook_secret": SECRET, "webhook_events_per_minute": 0},
        }
        passwords = Path(tmp) / "passwords.json"
        passwords.write_text(json.dumps({"bench": PASSWORD}))
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
            },
        )
        print("Preparing Airflow (db migrate, dags reserialize)...", flush=True)
        processes.airflow("db", "migrate")
        processes.airflow("dags", "reserialize")
        with processes:
            url = processes.url
            token = requests.post(
                f"{url}/auth/token", json={"username": "bench", "password": PASSWORD}, timeout=120
            ).json()["access_token"]
            auth = {"Authorization": f"Bearer {token}"}
            assets = requests.get(
                f"{url}/api/v2/assets?uri_pattern=ahachat", headers=auth, timeout=120
            ).json()
            asset_id = assets["assets"][0]["id"]
            body = {"messenger_user_id": "3824547807572463", "order_code": "DH10231", "phone": "0908071111"}

            def health(session: requests.Session, n: int) -> requests.Response:
                return session.get(f"{url}/api/v2/monitor/health", timeout=60)

            def public_route(session: requests.Session, n: int) -> requests.Response:
                extra = {**body, "n": n}
                return session.post(
                    f"{url}/api/v2/assets/events",
                    json={"asset_id": asset_id, "extra": extra},
                    headers=auth,
                    timeout=60,
                )

            def receiver(session: requests.Session, n: int) -> requests.Response:
                return session.post(
                    f"{url}/ahachat/webhooks/{CONN_ID}/{EVENT}",
                    json={**body, "n": n},
                    headers={"X-AhaChat-Secret": SECRET},
                    timeout=60,
                )

            results = []
            for name, call in (("health", health), ("public route", public_route), ("receiver", receiver)):
                print(f"  {name}: {args.clients} clients, {args.duration:.0f}s...", flush=True)
                results.append(load(name, call, args.clients, args.warmup, args.duration))
            server_log = processes.log_tail(10**9)
            locked = server_log.count("database is locked")
            errors = [line for line in server_log.splitlines() if "Error" in line or "error" in line]

    figures = [r.figures() for r in results]
    base = next(f for f in figures if f["scenario"] == "public route")
    print(
        f"\nairflow api-server (1 worker, SQLite), {args.clients} clients, {args.duration:.0f}s each, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"{'scenario':<14}{'calls':>8}{'accepted/s':>12}{'vs public':>11}"
        f"{'p50 ms':>9}{'p99 ms':>9}{'fail':>6}"
    )
    for f in figures:
        ratio = f["accepted_per_second"] / base["accepted_per_second"] if base["accepted_per_second"] else 0
        f["vs_public_route"] = ratio
        print(
            f"{f['scenario']:<14}{f['calls']:>8}{f['accepted_per_second']:>12.1f}{ratio:>10.2f}x"
            f"{f['p50_ms']:>9.1f}{f['p99_ms']:>9.1f}{f['failures']:>6}"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "clients": args.clients,
                    "duration": args.duration,
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "figures": figures,
                },
                indent=2,
            )
        )
    print(f"API server log: {locked} 'database is locked'; last error lines:")
    for line in errors[-5:]:
        print(f"  {line[:200]}")
    receiver_figures = figures[-1]
    return 0 if receiver_figures["accepted"] and not receiver_figures["failures"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
