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
  (``tests/helpers/held_race.py``): how many messages were delivered twice, or lost, and in how many trials
  the two deliveries were in the database at once. The control, in the same run, delivers without
  the store's lock (read, then mark): the harness must find it doubling.

Then the same two through Airflow's API server as a deployment runs it: ``airflow api-server
--workers 2`` with the provider's plugin, its own home, and the default store (an SQLite file in
that home):

- ``api_latency``: from the customer's call (``POST /ahachat/webhooks/<conn>/_held``, a new
  connection each, as the bot makes it) to its answer, with 1 and 20 messages held, against the
  baseline of a call with nothing held, in the same run: p50 and p99, each p50 as a ratio.
- ``api_race``: ``--api-trials`` trials of two calls of the same customer at the same moment (two
  threads at a barrier, through two API server workers): each trial's held messages must be in
  exactly one of the two answers, in order.

``--json PATH`` writes the figures; ``--quick`` is the smallest run (for the test suite);
``--part store|api-server|both`` chooses the measures.

Run: ``uv run python benchmarks/held_delivery.py [--samples 500] [--trials 1000] [--api-trials 1000]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import platform
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from helpers.held_race import race  # noqa: E402
from helpers.postgres_fixtures import PostgresUnavailable, running_cluster  # noqa: E402

from airflow_provider_ahachat.held.answer import build_answer  # noqa: E402
from airflow_provider_ahachat.held.messages import held_piece  # noqa: E402
from airflow_provider_ahachat.held.store import Customer, HeldStore, Hold  # noqa: E402

API_CONN_ID = "bench_hook"
API_SECRET = "bench-secret-0c61d2-not-real"

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


def latency_row(held: int, samples: int, times: list[float], carried: int) -> dict[str, Any]:
    """One scenario's figures: p50, p99 and max in milliseconds, and the messages carried."""
    return {
        "held": held,
        "samples": samples,
        "p50_ms": round(percentile(times, 50), 3),
        "p99_ms": round(percentile(times, 99), 3),
        "max_ms": round(max(times), 3),
        "messages_carried": carried,
        "messages_expected": held * samples,
    }


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
    return latency_row(held, samples, times, carried)


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
    print_latency(f"{name}: latency of a call's delivery and answer ({args.samples} calls each)", rows)
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


@contextlib.contextmanager
def api_server(tmp: Path) -> Iterator[Any]:
    """``airflow api-server --workers 2`` in its own home, with a connection that receives webhooks."""
    from helpers.airflow_processes import AirflowProcesses

    dags = tmp / "dags"
    dags.mkdir()
    # The receiver's own limit (600 calls a minute) would refuse a benchmark's calls: off.
    extra = {"webhook_secret": API_SECRET, "webhook_events_per_minute": 0}
    conn = {"conn_type": "ahachat", "login": BOT_ID, "password": "bench-token", "extra": extra}
    env = {
        f"AIRFLOW_CONN_{API_CONN_ID.upper()}": json.dumps(conn),
        "AIRFLOW__API__WORKERS": "2",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
    }
    home = tmp / "home"
    server = AirflowProcesses(home, dags_folder=dags, env=env, command="api-server", start_timeout=900)
    home.mkdir(parents=True, exist_ok=True)
    server.airflow("db", "migrate")
    with server:
        yield server


def call_held(url: str, user_id: str) -> tuple[float, dict[str, Any]]:
    """One call of the ``_held`` route, on a new connection: its time in milliseconds, and its answer."""
    import requests

    began = time.perf_counter()
    answer = requests.post(
        f"{url}/ahachat/webhooks/{API_CONN_ID}/_held",
        json={"messenger_user_id": user_id},
        headers={"X-AhaChat-Secret": API_SECRET, "Connection": "close"},
        timeout=60,
    )
    took = (time.perf_counter() - began) * 1000
    if answer.status_code != 200:
        raise RuntimeError(f"the API server answered {answer.status_code}: {answer.text[:300]}")
    return took, answer.json()


def api_latency(url: str, store: HeldStore, held: int, samples: int, first_user: int) -> dict[str, Any]:
    """``samples`` calls through the API server of customers with ``held`` messages each."""
    piece = held_piece("send_text", {"text": TEXT})
    times: list[float] = []
    carried = 0
    for n in range(samples):
        user_id = str(first_user + n)
        if held:
            who = Customer(API_CONN_ID, BOT_ID, user_id)
            store.hold([Hold(who, "send_text", piece) for _ in range(held)])
        took, answer = call_held(url, user_id)
        times.append(took)
        carried += len(answer.get("messages", []))
    return latency_row(held, samples, times, carried)


def two_calls_at_once(url: str, user_id: str) -> list[list[str]]:
    """Two calls of one customer, released together from two threads: the texts each answer carried."""
    import threading

    answers: list[list[str]] = []
    barrier = threading.Barrier(2)

    def call() -> None:
        barrier.wait()
        answers.append([m["text"] for m in call_held(url, user_id)[1].get("messages", [])])

    threads = [threading.Thread(target=call) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def api_race(url: str, store: HeldStore, trials: int, first_user: int, held: int = 3) -> dict[str, Any]:
    """Two calls of the same customer at once, ``trials`` times: each message in exactly one answer."""
    doubled = lost = out_of_order = split = 0
    began = time.monotonic()
    for n in range(trials):
        texts = [f"{n}-{i}" for i in range(held)]
        who = Customer(API_CONN_ID, BOT_ID, str(first_user + n))
        store.hold([Hold(who, "send_text", held_piece("send_text", {"text": text})) for text in texts])
        answers = two_calls_at_once(url, who.user_id)
        seen = [text for answer in answers for text in answer]
        doubled += len(seen) - len(set(seen))
        lost += len(set(texts) - set(seen))
        out_of_order += sum(answer != sorted(answer, key=texts.index) for answer in answers if answer)
        split += sum(1 for answer in answers if answer) > 1
    return {
        "trials": trials,
        "held_per_trial": held,
        "doubled": doubled,
        "lost": lost,
        "out_of_order": out_of_order,
        "split_between_answers": split,
        "seconds": round(time.monotonic() - began, 1),
    }


def print_latency(title: str, rows: list[dict[str, Any]]) -> None:
    """The latency rows, each p50 as a ratio of the first's (the baseline), which this adds to them."""
    base = rows[0]["p50_ms"] or 1e-9
    print(title, flush=True)
    for row in rows:
        row["p50_ratio"] = round(row["p50_ms"] / base, 2)
        label = "nothing held (baseline)" if not row["held"] else f"{row['held']} held"
        carried = f"carried {row['messages_carried']}/{row['messages_expected']}"
        print(
            f"  {label:24} p50 {row['p50_ms']:7.2f} ms   p99 {row['p99_ms']:7.2f} ms   "
            f"{row['p50_ratio']:5.2f}x   {carried}",
            flush=True,
        )


def measure_api_server(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Latency and the race, through ``airflow api-server --workers 2``."""
    started = time.monotonic()
    with api_server(tmp) as server:
        print(f"airflow api-server --workers 2 ready in {time.monotonic() - started:.0f} s", flush=True)
        # The store a task of this deployment would hold into: the default, in the API server's home.
        store = HeldStore.sqlite(server.home / "ahachat" / "held.sqlite3")
        try:
            api_latency(server.url, store, 1, 20, 8_000_000_000_000_000)  # warm-up: both workers, the table
            rows = [
                api_latency(server.url, store, held, args.samples, 8_100_000_000_000_000 + held * 10**6)
                for held in (0, 1, 20)
            ]
            print_latency(
                f"API server: from the customer's call to its answer ({args.samples} calls each)", rows
            )
            race_result = api_race(server.url, store, args.api_trials, 8_900_000_000_000_000)
        finally:
            store.close()
    print(
        f"  race, two calls at once   {race_result['trials']} trials: doubled {race_result['doubled']}, "
        f"lost {race_result['lost']}, out of order {race_result['out_of_order']}, "
        f"split between the answers {race_result['split_between_answers']} ({race_result['seconds']} s)",
        flush=True,
    )
    return {"api_latency": rows, "api_race": race_result}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=500, help="calls per latency scenario")
    parser.add_argument("--trials", type=int, default=1000, help="race trials of the store")
    parser.add_argument("--control-trials", type=int, default=100, help="race trials of the control")
    parser.add_argument("--database", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--api-trials", type=int, default=1000, help="race trials through the API server")
    parser.add_argument("--part", choices=("store", "api-server", "both"), default="both")
    parser.add_argument("--quick", action="store_true", help="the smallest run")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.samples, args.trials, args.control_trials, args.api_trials = 30, 20, 20, 20
    print(f"Python {platform.python_version()}, {platform.machine()}", flush=True)
    figures: list[dict[str, Any]] = []
    api: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="ahachat-held-bench-") as tmp:
        if args.part in ("store", "both"):
            with databases(args.database, Path(tmp)) as dbs:
                for name, url in dbs:
                    figures.append(measure(name, url, args))
        if args.part in ("api-server", "both"):
            api = measure_api_server(args, Path(tmp))
    if args.json:
        args.json.write_text(json.dumps({"store": figures, **api}, indent=2))
    lost_or_doubled = sum(f["race"]["doubled"] + f["race"]["lost"] for f in figures)
    if api:
        lost_or_doubled += api["api_race"]["doubled"] + api["api_race"]["lost"]
    return 1 if lost_or_doubled else 0


if __name__ == "__main__":
    # A SIGTERM (a timeout, a cancelled job) unwinds as Ctrl-C does, so that the Airflow processes
    # started here are stopped by their context managers instead of left running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    raise SystemExit(main())
