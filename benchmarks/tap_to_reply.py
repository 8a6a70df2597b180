"""
Tap to reply: from the bot's call to Airflow to the answer in the customer's Messenger.

``airflow standalone`` (its default LocalExecutor, SQLite, free port, throw-away ``AIRFLOW_HOME``)
runs ``example_ahachat_order_status``; the sandbox (its own process) is AhaChat and its outbox is
the customer's Messenger. The bot's block ``hoi_don_hang`` holds a JSON API step that sends the
customer's ID and order code, signed, to ``POST /ahachat/webhooks/ahachat_sandbox/order_status``.
For each of ``--events`` customers in turn, this script acts as the customer: saves an order code
and reaches the block (``PATCH /_sandbox/users/<id>`` with ``run_block``). Then it waits for the
reply in the outbox, polling every 50 ms, before the next customer, so that each event gets a run
of its own.

Printed for each event and as p50 / p95 / max:

- ``answer``: the receiver's answer time to the bot;
- ``run created``: from the call to the asset-triggered run's ``queued_at`` (the scheduler's loop);
- ``reply``: from the customer reaching the block to the reply in the outbox (the whole loop:
  the bot's call, the run, ``look_up_orders``, then the mapped ``reply`` task).

The baseline in the same run is ``run created``: what Airflow's scheduling alone costs before any
task of the provider starts. ``--json PATH`` writes the figures.

Run: ``uv run python benchmarks/tap_to_reply.py [--events 20]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from helpers.airflow_processes import AirflowProcesses, wait_until  # noqa: E402

from airflow_provider_ahachat.sandbox import SandboxProcess  # noqa: E402

DAG_ID = "example_ahachat_order_status"
CONN_ID = "ahachat_sandbox"
SECRET = "bench-tap-secret-71c2"


def percentile(values: list[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def parse_time(value: str | None) -> float | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=20, help="customers asking, one after another")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for one reply")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args(argv)

    with (
        tempfile.TemporaryDirectory(prefix="ahachat-bench-tap-") as tmp,
        SandboxProcess(conn_id=CONN_ID) as sandbox,
    ):
        dags = Path(tmp) / "dags"
        dags.mkdir()
        shutil.copy(ROOT / "example_dags" / f"{DAG_ID}.py", dags)
        customers = sandbox.generate_users(args.events, start=500_000)
        shop = Path(tmp) / "shop.db"
        with sqlite3.connect(shop) as db:
            db.execute(
                "CREATE TABLE orders (order_id TEXT PRIMARY KEY, messenger_user_id TEXT, status TEXT,"
                " eta TEXT, tracking_number TEXT)"
            )
            db.executemany(
                "INSERT INTO orders VALUES (?, ?, 'dang_giao', '02/12', ?)",
                [(f"DH{n:05d}", uid, f"GHN{n:08d}VN") for n, uid in enumerate(customers)],
            )
        env = {
            f"AIRFLOW_CONN_{CONN_ID.upper()}": f"{sandbox.connection_uri}?webhook_secret={SECRET}",
            "AIRFLOW_CONN_SHOP_DB": json.dumps({"conn_type": "sqlite", "host": str(shop)}),
            "AHACHAT_CONN_ID": CONN_ID,
            "AIRFLOW__AHACHAT__LEDGER_PATH": str(Path(tmp) / "ledger"),
        }
        print("Starting airflow standalone...", flush=True)
        started = time.monotonic()
        with AirflowProcesses(Path(tmp) / "home", dags_folder=dags, env=env) as airflow:
            airflow.wait_for_dag(DAG_ID)
            print(f"  ready and parsed in {time.monotonic() - started:.0f}s", flush=True)
            rows: list[dict[str, Any]] = []
            since = max((e["seq"] for e in sandbox.outbox()), default=0)
            # The bot's block that takes the order code calls Airflow, as a JSON API step in AhaChat.
            sandbox.set_json_api(
                "hoi_don_hang",
                {
                    "url": f"{airflow.url}/ahachat/webhooks/{CONN_ID}/order_status",
                    "headers": {"X-AhaChat-Secret": SECRET},
                    "body": {"messenger_user_id": "{{messenger_user_id}}", "order_code": "{{order_code}}"},
                    "timeout": 120,
                },
            )
            for n, user_id in enumerate(customers):
                sandbox.update_user(user_id, attributes={"order_code": f"DH{n:05d}"})
                called_at = time.time()
                began = time.monotonic()
                sandbox.update_user(user_id, run_block="hoi_don_hang")  # the customer sends the code
                call = sandbox.json_api_calls(limit=1)[-1]
                answered = call["duration_ms"] / 1000
                if call["status"] != 200:
                    print(f"  the receiver answered {call['status']}: {call['answer']} {call['error']}")
                    return 1

                def reply(user_id: str = user_id, since: int = since) -> list[dict[str, Any]]:
                    return [e for e in sandbox.outbox(user_id, since=since) if e["kind"] == "text"]

                try:
                    entries = wait_until(reply, args.timeout, f"the reply to {user_id}", 0.05)
                except TimeoutError:
                    print(airflow.log_tail(8000))
                    raise
                replied = time.monotonic() - began
                since = max(since, *(e["seq"] for e in entries))
                rows.append(
                    {"user_id": user_id, "answer_s": answered, "reply_s": replied, "called_at": called_at}
                )
                print(f"  {n + 1:>2}: answer {answered * 1000:.0f} ms, reply {replied:.1f}s", flush=True)
            wait_until(
                lambda: (runs := airflow.dag_runs(DAG_ID)) and all(r["state"] != "running" for r in runs),
                args.timeout,
                "the last runs to finish",
                0.5,
            )
            runs = sorted(airflow.dag_runs(DAG_ID), key=lambda r: r["queued_at"] or "")
    created = [parse_time(r["queued_at"]) for r in runs]
    for row in rows:  # each call's run is the first one queued after it
        after = [t for t in created if t is not None and t >= row["called_at"] - 0.5]
        row["run_created_s"] = min(after) - row["called_at"] if after else None

    def summary(key: str) -> dict[str, float]:
        values = [r[key] for r in rows if r.get(key) is not None]
        return {
            "p50": statistics.median(values),
            "p95": percentile(values, 95),
            "max": max(values),
        }

    figures = {key: summary(key) for key in ("answer_s", "run_created_s", "reply_s")}
    print(
        f"\n{len(rows)} events, airflow standalone (LocalExecutor, SQLite), {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}; {len(runs)} runs"
    )
    for key, label in (
        ("answer_s", "answer to the bot"),
        ("run_created_s", "run created"),
        ("reply_s", "reply"),
    ):
        f = figures[key]
        print(f"  {label:<18} p50 {f['p50']:6.2f}s  p95 {f['p95']:6.2f}s  max {f['max']:6.2f}s")
    ratio = (
        figures["reply_s"]["p50"] / figures["run_created_s"]["p50"] if figures["run_created_s"]["p50"] else 0
    )
    print(f"  reply p50 is {ratio:.1f}x the scheduler's run-creation p50")
    if args.json:
        args.json.write_text(json.dumps({"events": rows, "figures": figures, "runs": len(runs)}, indent=2))
    return 0


if __name__ == "__main__":
    # A SIGTERM (a timeout, a cancelled job) unwinds as Ctrl-C does, so that the Airflow processes
    # started here are stopped by their context managers instead of left running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    raise SystemExit(main())
