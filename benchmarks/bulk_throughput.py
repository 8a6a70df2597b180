"""
Messages per second to many recipients: a naive loop, ``HttpOperator`` mapped per recipient, and
this provider's bulk path, all against one AhaChat sandbox with 50 ms of latency and a limit of
200 requests per second.

The sandbox runs as a child process (its own interpreter and GIL). Every scenario sends AhaChat's
Broadcast API request (the block ``shipping_update`` with the message tag
``POST_PURCHASE_UPDATE`` and the recipient's own ``order_id`` and ``tracking_number``) to
generated customers, in the same run:

- ``naive loop``: one ``requests.post`` after another, as a hand-written script would;
- ``HttpOperator mapped``: ``HttpOperator.partial(...).expand(endpoint=[...])``, one task
  instance per recipient, run by ``airflow dags test`` in a child process with a throw-away
  ``AIRFLOW_HOME``. Its rate is recipients divided by the wall time of ``airflow dags test``
  (start-up included, as a user waits for it); the rate between the first task instance's start
  and the last one's end is shown too;
- ``provider``: the bulk engine (:class:`~airflow_provider_ahachat.bulk.BulkRunner` with a
  ledger) reading a CSV file of recipients, at each ``--sizes``. Its rate is delivered messages
  divided by the wall time of the whole run (reading, journaling and the final report included).

For each scenario the sandbox is reset, so its outbox holds only that scenario's deliveries:
``lost`` counts recipients without a delivery, ``doubled`` those with more than one, and ``429``
the requests the sandbox refused for the rate limit. The ratio is to the sandbox's limit.

Every scenario is bounded in requests and in time, and targets only the sandbox on loopback.

Run: ``uv run python benchmarks/bulk_throughput.py`` (about 3 minutes), or with ``--quick`` for a
smoke run of a few seconds; ``--help`` for the sizes, ``--json FILE`` to keep the figures and
``--strict`` to exit 1 when the provider is under ``--target`` of the limit or lost or doubled a
message.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import requests

from airflow_provider_ahachat.bulk import BulkRunner, Ledger, bulk_action, count_recipients, read_recipients
from airflow_provider_ahachat.client import AhaChatClient, redact
from airflow_provider_ahachat.sandbox import SandboxProcess
from airflow_provider_ahachat.sandbox.state import synthetic_user_id

BLOCK = "shipping_update"
TAG = "POST_PURCHASE_UPDATE"
HTTP_CONN_ID = "ahachat_http"
HTTP_DAG_ID = "bench_http_operator_per_recipient"

#: The DAG of the ``HttpOperator`` scenario. The recipients' Broadcast API endpoints are built at
#: parse time from a file of IDs and the token in an environment variable of the child process.
HTTP_DAG = textwrap.dedent(
    f'''\
    from __future__ import annotations

    import json
    import os
    from urllib.parse import quote, urlencode

    import pendulum
    from airflow.providers.http.operators.http import HttpOperator
    from airflow.sdk import DAG

    with open(os.environ["AHACHAT_BENCH_RECIPIENTS"], encoding="utf-8") as handle:
        recipients = json.load(handle)
    token = os.environ["AHACHAT_BENCH_TOKEN"]
    bot_id = os.environ["AHACHAT_BENCH_BOT_ID"]


    def endpoint(row: dict[str, str]) -> str:
        query = [("ahachat_token", token), ("ahachat_message_tag", "{TAG}"),
                 ("ahachat_block_name", "{BLOCK}"), ("order_id", row["order_id"]),
                 ("tracking_number", row["tracking_number"])]
        return f"/api/bots/{{bot_id}}/users/{{row['user_id']}}/send?" + urlencode(query, quote_via=quote)


    with DAG("{HTTP_DAG_ID}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
             catchup=False):
        HttpOperator.partial(
            task_id="send", http_conn_id="{HTTP_CONN_ID}", method="POST", log_response=False, retries=0
        ).expand(endpoint=[endpoint(row) for row in recipients])
    '''
)


@dataclass
class Figure:
    """What one scenario measured."""

    scenario: str
    recipients: int
    seconds: float
    delivered: int
    lost: int | None = None
    doubled: int | None = None
    refused_429: int = 0
    retries: int = 0
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.delivered / self.seconds if self.seconds > 0 else 0.0


def recipient_row(number: int) -> dict[str, str]:
    """Customer ``number`` of the sandbox's generated ones, with their own order."""
    return {
        "user_id": synthetic_user_id(number),
        "order_id": f"DH{number:08d}",
        "tracking_number": f"GHN{number:010d}",
    }


def write_csv(path: Path, rows: Iterable[dict[str, str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["user_id", "order_id", "tracking_number"])
        writer.writeheader()
        writer.writerows(rows)


def broadcast_url(base: str, bot_id: str, token: str, row: dict[str, str]) -> str:
    """The Broadcast API URL for one recipient, token first as AhaChat documents it."""
    query = [
        ("ahachat_token", token),
        ("ahachat_message_tag", TAG),
        ("ahachat_block_name", BLOCK),
        ("order_id", row["order_id"]),
        ("tracking_number", row["tracking_number"]),
    ]
    return f"{base}/api/bots/{quote(bot_id)}/users/{row['user_id']}/send?{urlencode(query, quote_via=quote)}"


def prepare(sandbox: SandboxProcess, count: int) -> list[dict[str, str]]:
    """Reset the sandbox and generate ``count`` customers; their rows."""
    sandbox.reset()
    sandbox.generate_users(count)
    return [recipient_row(number) for number in range(count)]


def check_outbox(sandbox: SandboxProcess, figure: Figure, rows: Sequence[dict[str, str]]) -> None:
    """Fill in lost, doubled and 429s from the sandbox."""
    counts = sandbox.outbox_counts(sandbox.bot_id)
    expected = {row["user_id"] for row in rows}
    figure.lost = sum(1 for user_id in expected if counts.get(user_id, 0) == 0)
    figure.doubled = sum(1 for user_id in expected if counts.get(user_id, 0) > 1)
    strangers = sum(n for user_id, n in counts.items() if user_id not in expected)
    figure.doubled += strangers
    figure.refused_429 = int(sandbox.stats()["by_status"].get("429", 0))


# --------------------------------------------------------------------------- (a) naive loop


def naive_loop(sandbox: SandboxProcess, count: int, deadline_s: float) -> Figure:
    """``requests.post`` per recipient, one after the other, no session, no retry."""
    rows = prepare(sandbox, count)
    delivered = 0
    started = time.perf_counter()
    sent = 0
    for row in rows:
        if time.perf_counter() - started > deadline_s:
            break
        response = requests.post(broadcast_url(sandbox.url, sandbox.bot_id, sandbox.token, row), timeout=10)
        sent += 1
        delivered += response.status_code == 200
    seconds = time.perf_counter() - started
    figure = Figure("naive requests.post loop", sent, seconds, delivered)
    check_outbox(sandbox, figure, rows[:sent])
    if sent < count:
        figure.note = f"stopped at the {deadline_s:g} s bound"
    return figure


# --------------------------------------------------------------------------- (b) HttpOperator


def airflow_env(home: Path, dags: Path, extra: dict[str, str]) -> dict[str, str]:
    """A throw-away Airflow: its own home, DAGs folder and SQLite database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_"))}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__LOGGING__COLORED_CONSOLE_LOG": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "NO_PROXY": "*",
            **extra,
        }
    )
    return env


def run_airflow(env: dict[str, str], log: Path, timeout: float, secret: str, *args: str) -> float:
    """Run ``airflow <args>``; its wall time. On failure, show the end of its log without ``secret``."""
    started = time.perf_counter()
    with log.open("a", encoding="utf-8") as out:
        try:
            code = subprocess.call(
                [sys.executable, "-m", "airflow", *args], env=env, stdout=out, stderr=out, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            code = -1
    seconds = time.perf_counter() - started
    if code != 0:
        tail = redact(log.read_text(encoding="utf-8", errors="replace")[-4000:], secret)
        raise RuntimeError(f"airflow {' '.join(args)} failed (exit {code}):\n{tail}")
    return seconds


def _when(value: Any) -> datetime:
    moment = datetime.fromisoformat(str(value))
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def task_instances(database: Path, dag_id: str) -> tuple[int, int, float]:
    """Task instances of ``dag_id``: how many, how many succeeded, first start to last end in s."""
    with sqlite3.connect(database) as db:
        rows = db.execute(
            "SELECT state, start_date, end_date FROM task_instance WHERE dag_id = ?", (dag_id,)
        ).fetchall()
    starts = [_when(r[1]) for r in rows if r[1]]
    ends = [_when(r[2]) for r in rows if r[2]]
    span = (max(ends) - min(starts)).total_seconds() if starts and ends else 0.0
    return len(rows), sum(1 for r in rows if r[0] == "success"), span


def http_operator(sandbox: SandboxProcess, count: int, timeout: float) -> Figure:
    """``HttpOperator`` mapped once per recipient, under ``airflow dags test``."""
    rows = [recipient_row(number) for number in range(count)]
    with tempfile.TemporaryDirectory(prefix="ahachat-bench-http-") as tmp:
        home = Path(tmp)
        dags = home / "dags"
        dags.mkdir()
        (dags / f"{HTTP_DAG_ID}.py").write_text(HTTP_DAG, encoding="utf-8")
        ids = home / "recipients.json"
        ids.write_text(json.dumps(rows), encoding="utf-8")
        env = airflow_env(
            home,
            dags,
            {
                f"AIRFLOW_CONN_{HTTP_CONN_ID.upper()}": sandbox.url,
                "AHACHAT_BENCH_RECIPIENTS": str(ids),
                "AHACHAT_BENCH_TOKEN": sandbox.token,
                "AHACHAT_BENCH_BOT_ID": sandbox.bot_id,
            },
        )
        log = home / "airflow.log"
        migrate = run_airflow(env, log, timeout, sandbox.token, "db", "migrate")
        prepare(sandbox, count)
        wall = run_airflow(env, log, timeout, sandbox.token, "dags", "test", HTTP_DAG_ID)
        instances, succeeded, span = task_instances(home / "airflow.db", HTTP_DAG_ID)
    figure = Figure(f"HttpOperator mapped, {count} task instances", count, wall, 0)
    check_outbox(sandbox, figure, rows)
    figure.delivered = count - (figure.lost or 0)
    figure.extra = {
        "task_instances": instances,
        "succeeded": succeeded,
        "first_start_to_last_end_s": round(span, 3),
        "rate_between_task_instances": round(count / span, 2) if span > 0 else None,
        "db_migrate_s": round(migrate, 1),
    }
    figure.note = (
        f"wall of `airflow dags test`; {count / span:.1f}/s from first task start to last end"
        if span > 0
        else "wall of `airflow dags test`"
    )
    return figure


# --------------------------------------------------------------------------- (c) this provider


def provider_engine(
    sandbox: SandboxProcess, count: int, concurrency: int, rate_limit: float, workdir: Path
) -> Figure:
    """The bulk engine, from a CSV file, with a ledger, as the operators run it."""
    rows = prepare(sandbox, count)
    source = workdir / f"recipients-{count}.csv"
    write_csv(source, rows)
    ledger = workdir / f"ledger-{count}"
    with AhaChatClient(sandbox.bot_id, sandbox.token, sandbox.url, pool_size=concurrency) as client:
        action = bulk_action(
            client, "broadcast_block", block_name=BLOCK, message_tag=TAG, attributes={"campaign": "bench"}
        )
        runner = BulkRunner(
            client,
            action,
            ledger=Ledger(ledger),
            concurrency=concurrency,
            rate_limit=rate_limit,
            max_failures=0,
            progress_interval=3600,
        )
        started = time.perf_counter()
        summary = runner.run(read_recipients(source), total=count_recipients(source))
        seconds = time.perf_counter() - started
    delivered = int(summary["outcomes"].get("delivered", 0))
    figure = Figure(f"provider, {count:,} recipients", count, seconds, delivered)
    check_outbox(sandbox, figure, rows)
    figure.retries = sum(summary["retries"].values())
    figure.extra = {
        "engine_requests_per_second": summary["requests_per_second"],
        "outcomes": summary["outcomes"],
        "rate_limit_pauses": summary["rate_limit_pauses"],
        "retries": summary["retries"],
        "concurrency": concurrency,
        "client_rate_limit": rate_limit,
    }
    figure.note = f"bulk engine, CSV, concurrency {concurrency}, rate_limit {rate_limit:g}"
    return figure


# --------------------------------------------------------------------------- main


def _row(*cells: str) -> str:
    widths = (44, 8, 9, 11, 9, 6, 8, 5)
    first, *rest = cells[: len(widths)]
    line = f"{first:<{widths[0]}}" + "".join(
        f"{cell:>{width}}" for cell, width in zip(rest, widths[1:], strict=True)
    )
    return line + (f"  {cells[-1]}" if len(cells) > len(widths) and cells[-1] else "")


def print_table(figures: list[Figure], limit: float) -> None:
    print()
    print(_row("scenario", "sent to", "seconds", "messages/s", "of limit", "lost", "doubled", "429", ""))
    for f in figures:
        unknown = "?"
        print(
            _row(
                f.scenario,
                f"{f.recipients:,}",
                f"{f.seconds:.2f}",
                f"{f.rate:.1f}",
                f"{100 * f.rate / limit:.1f}%",
                unknown if f.lost is None else str(f.lost),
                unknown if f.doubled is None else str(f.doubled),
                str(f.refused_429),
                f.note,
            )
        )


def _sizes(text: str) -> list[int]:
    sizes = [int(part) for part in text.split(",") if part.strip()]
    if not sizes or any(not 1 <= size <= 200_000 for size in sizes):
        raise argparse.ArgumentTypeError("sizes: whole numbers from 1 to 200000, comma-separated")
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--latency-ms", type=float, default=50.0, help="the sandbox's added latency")
    parser.add_argument("--rate-limit", type=float, default=200.0, help="the sandbox's requests per second")
    parser.add_argument("--naive", type=int, default=200, help="recipients of the naive loop (0 skips it)")
    parser.add_argument(
        "--http", type=int, default=25, help="recipients of the mapped HttpOperator (0 skips it; at most 200)"
    )
    parser.add_argument(
        "--sizes", type=_sizes, default=[2_000, 20_000], help="the provider's audiences, e.g. 2000,20000"
    )
    parser.add_argument("--concurrency", type=int, default=16, help="the provider's requests in flight")
    parser.add_argument(
        "--client-rate-limit",
        type=float,
        default=None,
        help="the provider's own rate_limit (default: the sandbox's)",
    )
    parser.add_argument(
        "--target", type=float, default=0.9, help="share of the limit the provider must reach"
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 20 naive, no Airflow, 300 recipients"
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds any one scenario may take")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--strict", action="store_true", help="exit 1 if the provider misses the target")
    args = parser.parse_args(argv)
    if args.quick:
        args.naive, args.http, args.sizes = min(args.naive, 20), 0, [300]
    naive = max(0, min(args.naive, 2_000))
    http = max(0, min(args.http, 200))
    client_limit = args.rate_limit if args.client_rate_limit is None else args.client_rate_limit

    figures: list[Figure] = []
    with (
        tempfile.TemporaryDirectory(prefix="ahachat-bench-") as tmp,
        SandboxProcess(
            latency_ms=args.latency_ms, rate_limit=args.rate_limit, log_level="warning"
        ) as sandbox,
    ):
        config = sandbox.config()
        print(
            f"sandbox pid {sandbox.pid} at {sandbox.url}: latency {config['latency_ms']:g} ms, "
            f"limit {config['rate_limit']:g} requests/s; python {platform.python_version()}, "
            f"{os.cpu_count()} CPUs, {platform.platform()}"
        )
        if naive:
            figures.append(naive_loop(sandbox, naive, deadline_s=min(args.timeout, 120.0)))
            print(f"  done: {figures[-1].scenario}", flush=True)
        if http:
            figures.append(http_operator(sandbox, http, timeout=args.timeout))
            print(f"  done: {figures[-1].scenario}", flush=True)
        for size in args.sizes:
            figures.append(provider_engine(sandbox, size, args.concurrency, client_limit, Path(tmp)))
            print(f"  done: {figures[-1].scenario}", flush=True)
        sandbox.reset()

    print_table(figures, args.rate_limit)
    provider = [f for f in figures if f.scenario.startswith("provider")]
    missed = [
        f for f in provider if f.rate < args.target * args.rate_limit or f.lost or f.doubled or f.lost is None
    ]
    verdict = "missed" if missed else "met"
    print(
        f"\nTarget ({100 * args.target:.0f}% of {args.rate_limit:g}/s, nothing lost or doubled) "
        f"{verdict} by the provider."
    )
    if args.json is not None:
        document = {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "latency_ms": args.latency_ms,
            "rate_limit": args.rate_limit,
            "figures": [{**asdict(f), "messages_per_second": round(f.rate, 2)} for f in figures],
            "target_met": not missed,
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return 1 if missed and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
