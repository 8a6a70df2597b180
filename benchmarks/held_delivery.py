"""
Held messages: how long an answer that carries them takes, and exactly once under a race.

Two measures, on each database the store runs on (SQLite, as one machine has it; PostgreSQL, a
throw-away cluster, as a deployment on several machines has it):

- ``latency``: from the call to the answer, for a customer with 1 and with 20 held messages (text
  messages of about 100 characters), against the baseline of a customer with nothing held, in the
  same run. Each sample holds the messages for a new customer (not timed), then times what a call
  does: the store's delivery (one locked transaction), the answer built and written as JSON.
  Printed: p50 and p99 in milliseconds, and each p50 as a ratio of the baseline's.
- ``race``: ``--trials`` trials of two processes delivering the same customer at the same moment
  (``tests/held_race.py``): how many messages were delivered twice, or lost, and in how many trials
  the two deliveries were in the database at once. The control, in the same run, delivers without
  the store's lock (read, then mark): the harness must find it doubling.

``--json PATH`` writes the figures; ``--quick`` is the smallest run (for the test suite).

Run: ``uv run python benchmarks/held_delivery.py [--samples 500] [--trials 1000]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from held_race import race  # noqa: E402
from postgres_fixtures import PostgresUnavailable, running_cluster  # noqa: E402

from airflow_provider_ahachat.held.answer import build_answer  # noqa: E402
from airflow_provider_ahachat.held.messages import held_piece  # noqa: E402
from airflow_provider_ahachat.held.store import Customer, HeldStore, Hold  # noqa: E402

CONN_ID = "bench_bot"
BOT_ID = "12404829"
TEXT = "Đơn hàng DH10231 của chị đã được giao cho GHN, mã vận đơn GHN8123456VN. Dự kiến giao ngày 12/12."


def percentile(values: list[float], p: float) -> float:
    """The ``p``-th percentile of ``values`` (nearest rank), 0 for none."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def latency(store: HeldStore, held: int, samples: int, first_user: int) -> dict[str, Any]:
    """``samples`` calls of customers with ``held`` messages each; their times in milliseconds."""
    piece = held_piece("send_text", {"text": TEXT})
    times: list[float] = []
    carried = 0
    for n in range(samples):
        customer = Customer(CONN_ID, BOT_ID, str(first_user + n))
        if held:
            store.hold([Hold(customer, "send_text", piece) for _ in range(held)])
        began = time.perf_counter()
        delivered = store.deliver(customer, call="bench")
        answer = json.dumps(build_answer([h.piece() for h in delivered], first=[{"text": "Đã nhận"}]))
        times.append((time.perf_counter() - began) * 1000)
        carried += len(json.loads(answer)["messages"]) - 1
    return {
        "held": held,
        "samples": samples,
        "p50_ms": round(percentile(times, 50), 3),
        "p99_ms": round(percentile(times, 99), 3),
        "max_ms": round(max(times), 3),
        "messages_carried": carried,
        "messages_expected": held * samples,
    }


@contextlib.contextmanager
def databases(which: str, tmp: Path) -> Iterator[list[tuple[str, str]]]:
    """The databases to measure on: (name, SQLAlchemy URL)."""
    found: list[tuple[str, str]] = []
    if which in ("sqlite", "both"):
        found.append(("SQLite", f"sqlite:///{tmp / 'held.sqlite3'}"))
    if which not in ("postgresql", "both"):
        yield found
        return
    try:
        with running_cluster() as cluster:
            url = f"postgresql+psycopg2://postgres@127.0.0.1:{cluster.port}/{cluster.new_database()}"
            yield [*found, ("PostgreSQL", url)]
            return
    except PostgresUnavailable as why:
        print(f"PostgreSQL cannot run here ({why}); measuring SQLite only.", flush=True)
    yield found


def measure(name: str, url: str, args: argparse.Namespace) -> dict[str, Any]:
    """Both measures on one database."""
    store = HeldStore.from_url(url)
    try:
        latency(store, 1, 20, 9_000_000_000_000_000)  # warm-up: the table, the connections
        rows = [
            latency(store, held, args.samples, 9_100_000_000_000_000 + held * 10**6) for held in (0, 1, 20)
        ]
    finally:
        store.close()
    base = rows[0]["p50_ms"] or 1e-9
    for row in rows:
        row["p50_ratio"] = round(row["p50_ms"] / base, 2)
    print(f"{name}: latency of a call's delivery and answer ({args.samples} calls each)", flush=True)
    for row in rows:
        label = "nothing held (baseline)" if not row["held"] else f"{row['held']} held"
        print(
            f"  {label:24} p50 {row['p50_ms']:7.2f} ms   p99 {row['p99_ms']:7.2f} ms   "
            f"{row['p50_ratio']:5.2f}x   carried {row['messages_carried']}/{row['messages_expected']}",
            flush=True,
        )
    trials = race(url, args.trials, held=3, database=name).to_json()
    control = race(url, args.control_trials, held=3, naive=True, database=name).to_json()
    for result in (trials, control):
        label = "store" if result["mode"] == "store" else "control (no lock)"
        print(
            f"  race, {label:18} {result['trials']} trials: doubled {result['doubled']}, "
            f"lost {result['lost']}, out of order {result['out_of_order']}, "
            f"both in the database at once {result['overlapped']}/{result['trials']} ({result['seconds']} s)",
            flush=True,
        )
    return {"database": name, "latency": rows, "race": trials, "race_control": control}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=500, help="calls per latency scenario")
    parser.add_argument("--trials", type=int, default=1000, help="race trials of the store")
    parser.add_argument("--control-trials", type=int, default=100, help="race trials of the control")
    parser.add_argument("--database", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--quick", action="store_true", help="the smallest run")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.samples, args.trials, args.control_trials = 30, 20, 20
    print(f"Python {platform.python_version()}, {platform.machine()}", flush=True)
    figures = []
    with (
        tempfile.TemporaryDirectory(prefix="ahachat-held-bench-") as tmp,
        databases(args.database, Path(tmp)) as dbs,
    ):
        for name, url in dbs:
            figures.append(measure(name, url, args))
    if args.json:
        args.json.write_text(json.dumps({"store": figures}, indent=2))
    lost_or_doubled = sum(f["race"]["doubled"] + f["race"]["lost"] for f in figures)
    return 1 if lost_or_doubled else 0


if __name__ == "__main__":
    sys.exit(main())
