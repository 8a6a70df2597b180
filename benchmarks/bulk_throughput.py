"""
Messages per second to many recipients: a naive loop, ``HttpOperator`` mapped per recipient, and
this provider's bulk path, all against one AhaChat sandbox with 50 ms of latency and a limit of
200 requests per second.

The sandbox runs as a child process (its own interpreter and GIL). Every scenario sends AhaChat's
Broadcast API request (the block ``shipping_update``, without a message tag, as Messenger allows
it since 27 April 2026, and the recipient's own ``order_id`` and ``tracking_number``) to
generated customers who wrote in the last 24 hours, in the same run:

- ``naive loop``: one ``requests.post`` after another, as a hand-written script would;
- ``HttpOperator mapped``: ``HttpOperator.partial(...).expand(endpoint=[...])``, one task
  instance per recipient, run by ``airflow dags test`` in a child process with a throw-away
  ``AIRFLOW_HOME``. The first task instance also waits for ``airflow dags test`` to start, so its
  rate is taken from the first task instance's end to the last one's (recipients 2 to N); the
  wall time of the whole ``airflow dags test``, start-up included, is shown too;
- ``provider operator``: ``BroadcastBlockOperator(recipients=<a CSV file>)``, one task, run by
  ``airflow dags test`` in the same throw-away Airflow, with ``rate_limit`` and ``concurrency`` as
  extra fields of the ``ahachat`` connection. Its rate is delivered messages over the seconds of
  the bulk run that the task returns as its XCom summary (reading the file, sending,
  journaling, the final report); the wall time of ``airflow dags test`` is shown too;
- ``provider engine``: the same bulk path without Airflow
  (:class:`~airflow_provider_ahachat.bulk.BulkRunner` with a ledger, reading the CSV file), timed
  around ``run()``.

For each scenario the sandbox is reset, so its outbox holds only that scenario's deliveries:
``lost`` counts recipients without a delivery, ``doubled`` those with more than one, and ``429``
the requests the sandbox refused for the rate limit. The ratio is to the sandbox's limit.

Every scenario is bounded in requests and in time, and targets only the sandbox on loopback.

The provider runs at each of ``--sizes`` (2,000 and 20,000 recipients by default).

Run: ``uv run python benchmarks/bulk_throughput.py`` (about 6 minutes), or with ``--quick`` for a
smoke run of a few seconds; ``--help`` for the sizes, ``--json FILE`` to keep the figures and
``--strict`` to exit 1 when the provider is under ``--target`` of the limit or lost or doubled a
message.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import requests
from _audience import load_average, recipient_row, sizes, write_recipients  # benchmarks/, beside this script

from airflow_provider_ahachat.bulk import BulkRunner, Ledger, count_recipients, read_recipients
from airflow_provider_ahachat.client import AhaChatClient, redact
from airflow_provider_ahachat.sandbox import SandboxProcess

BLOCK = "shipping_update"
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

    # Set by the benchmark for the run of this DAG only; other runs parse it as empty.
    recipients = []
    if os.environ.get("AHACHAT_BENCH_RECIPIENTS"):
        with open(os.environ["AHACHAT_BENCH_RECIPIENTS"], encoding="utf-8") as handle:
            recipients = json.load(handle)
    token = os.environ.get("AHACHAT_BENCH_TOKEN", "")
    bot_id = os.environ.get("AHACHAT_BENCH_BOT_ID", "")


    def endpoint(row: dict[str, str]) -> str:
        query = [("ahachat_token", token),
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


PROVIDER_CONN_ID = "ahachat_bench"
PROVIDER_DAG_ID = "bench_ahachat_broadcast_block"

#: The DAG of the provider's scenario: one task, every recipient of a CSV file. The connection
#: carries the rate limit and the concurrency as extra fields.
PROVIDER_DAG = textwrap.dedent(
    f'''\
    from __future__ import annotations

    import os

    import pendulum
    from airflow.sdk import DAG

    from airflow_provider_ahachat.operators.ahachat import BroadcastBlockOperator

    with DAG("{PROVIDER_DAG_ID}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
             catchup=False):
        BroadcastBlockOperator(
            task_id="broadcast",
            ahachat_conn_id="{PROVIDER_CONN_ID}",
            block_name="{BLOCK}",
            attributes={{"campaign": "bench"}},
            recipients=os.environ.get("AHACHAT_BENCH_CSV", "unset.csv"),
            ledger_path=os.environ.get("AHACHAT_BENCH_LEDGER"),
            max_failures=0,
            retries=0,
        )
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
    #: Messages delivered within ``seconds``, when that is not all of them.
    delivered_in_window: int | None = None

    @property
    def rate(self) -> float:
        done = self.delivered if self.delivered_in_window is None else self.delivered_in_window
        return done / self.seconds if self.seconds > 0 else 0.0


def broadcast_url(base: str, bot_id: str, token: str, row: dict[str, str]) -> str:
    """The Broadcast API URL for one recipient, token first as AhaChat documents it."""
    query = [
        ("ahachat_token", token),
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


# --------------------------------------------------------------------------- Airflow


def _when(value: Any) -> datetime:
    moment = datetime.fromisoformat(str(value))
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


class AirflowHome:
    """
    A throw-away Airflow: its own home, DAGs folder and SQLite database, run by the ``airflow``
    command in child processes, with the sandbox's connections in ``AIRFLOW_CONN_`` variables.

    :param folder: an empty folder to live in.
    :param sandbox: the sandbox the connections point to.
    :param timeout: seconds any one ``airflow`` command may take.
    """

    def __init__(self, folder: Path, sandbox: SandboxProcess, rate_limit: float, concurrency: int) -> None:
        self.home = folder
        self.dags = folder / "dags"
        self.dags.mkdir()
        (self.dags / f"{HTTP_DAG_ID}.py").write_text(HTTP_DAG, encoding="utf-8")
        (self.dags / f"{PROVIDER_DAG_ID}.py").write_text(PROVIDER_DAG, encoding="utf-8")
        self.log = folder / "airflow.log"
        self.secret = sandbox.token
        extras = urlencode({"rate_limit": f"{rate_limit:g}", "concurrency": str(concurrency)})
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_"))}
        self.env.update(
            {
                "AIRFLOW_HOME": str(folder),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{folder / 'airflow.db'}",
                "AIRFLOW__LOGGING__COLORED_CONSOLE_LOG": "False",
                "NO_PROXY": "*",
                f"AIRFLOW_CONN_{HTTP_CONN_ID.upper()}": sandbox.url,
                f"AIRFLOW_CONN_{PROVIDER_CONN_ID.upper()}": f"{sandbox.connection_uri}?{extras}",
                "AHACHAT_BENCH_TOKEN": sandbox.token,
                "AHACHAT_BENCH_BOT_ID": sandbox.bot_id,
            }
        )

    def run(self, timeout: float, *args: str, **env: str) -> float:
        """Run ``airflow <args>``; its wall time. On failure, show the end of its log, token removed."""
        started = time.perf_counter()
        with self.log.open("a", encoding="utf-8") as out:
            try:
                code = subprocess.call(
                    [sys.executable, "-m", "airflow", *args],
                    env={**self.env, **env},
                    stdout=out,
                    stderr=out,
                    timeout=timeout,
                )
            except subprocess.TimeoutExpired:
                code = -1
        seconds = time.perf_counter() - started
        if code != 0:
            tail = redact(self.log.read_text(encoding="utf-8", errors="replace")[-4000:], self.secret)
            raise RuntimeError(f"airflow {' '.join(args)} failed (exit {code}):\n{tail}")
        return seconds

    def task_instances(self, dag_id: str) -> tuple[int, int, list[datetime]]:
        """Task instances of ``dag_id``'s latest run: how many, how many succeeded, their ends in order."""
        with contextlib.closing(sqlite3.connect(self.home / "airflow.db")) as db:
            rows = db.execute(
                "SELECT state, end_date FROM task_instance WHERE dag_id = ? AND run_id = "
                "(SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1)",
                (dag_id, dag_id),
            ).fetchall()
        ends = sorted(_when(r[1]) for r in rows if r[1])
        return len(rows), sum(1 for r in rows if r[0] == "success"), ends

    def return_value(self, dag_id: str, task_id: str) -> Any:
        """The XCom ``return_value`` of a task of ``dag_id``'s latest run."""
        with contextlib.closing(sqlite3.connect(self.home / "airflow.db")) as db:
            row = db.execute(
                "SELECT value FROM xcom WHERE dag_id = ? AND task_id = ? AND key = 'return_value' "
                "ORDER BY timestamp DESC LIMIT 1",
                (dag_id, task_id),
            ).fetchone()
        if row is None:
            return None
        value = row[0]
        return json.loads(value) if isinstance(value, str | bytes) else value


# --------------------------------------------------------------------------- (b) HttpOperator


def http_operator(sandbox: SandboxProcess, airflow: AirflowHome, count: int, timeout: float) -> Figure:
    """``HttpOperator`` mapped once per recipient, under ``airflow dags test``."""
    rows = [recipient_row(number) for number in range(count)]
    ids = airflow.home / f"http-recipients-{count}.json"
    ids.write_text(json.dumps(rows), encoding="utf-8")
    prepare(sandbox, count)
    wall = airflow.run(timeout, "dags", "test", HTTP_DAG_ID, AHACHAT_BENCH_RECIPIENTS=str(ids))
    instances, succeeded, ends = airflow.task_instances(HTTP_DAG_ID)
    # The first task instance also waits for `airflow dags test` to start its in-process API, so
    # the steady pace is taken from the first task instance's end to the last one's.
    span = (ends[-1] - ends[0]).total_seconds() if len(ends) > 1 else wall
    figure = Figure(f"HttpOperator mapped, {count} task instances", count, span, 0)
    check_outbox(sandbox, figure, rows)
    figure.delivered = count - (figure.lost or 0)
    steady = (len(ends) - 1) / span if len(ends) > 1 and span > 0 else 0.0
    figure.extra = {
        "task_instances": instances,
        "succeeded": succeeded,
        "rate_after_the_first_task_instance": round(steady, 2),
        "airflow_dags_test_s": round(wall, 2),
        "rate_over_airflow_dags_test": round(count / wall, 2),
    }
    figure.delivered_in_window = len(ends) - 1 if len(ends) > 1 else figure.delivered
    figure.note = (
        f"rate: task instances 2..{count}, end to end; `airflow dags test` took {wall:.1f} s: "
        f"{count / wall:.1f}/s"
    )
    return figure


# --------------------------------------------------------------------------- (c) this provider


def provider_operator(
    sandbox: SandboxProcess, airflow: AirflowHome, count: int, timeout: float, workdir: Path
) -> Figure:
    """``BroadcastBlockOperator(recipients=<CSV file>)``, one task, under ``airflow dags test``."""
    rows = [recipient_row(number) for number in range(count)]
    source = workdir / f"operator-recipients-{count}.csv"
    write_recipients(source, count)
    ledger = workdir / f"operator-ledger-{count}"
    prepare(sandbox, count)
    wall = airflow.run(
        timeout,
        "dags",
        "test",
        PROVIDER_DAG_ID,
        AHACHAT_BENCH_CSV=str(source),
        AHACHAT_BENCH_LEDGER=str(ledger),
    )
    instances, succeeded, _ = airflow.task_instances(PROVIDER_DAG_ID)
    summary = airflow.return_value(PROVIDER_DAG_ID, "broadcast") or {}
    outcomes = summary.get("outcomes", {})
    seconds = float(summary.get("seconds") or wall)
    figure = Figure(
        f"provider operator, {count:,} recipients", count, seconds, int(outcomes.get("delivered", 0))
    )
    check_outbox(sandbox, figure, rows)
    figure.retries = sum(summary.get("retries", {}).values())
    figure.extra = {
        "task_instances": instances,
        "succeeded": succeeded,
        "airflow_dags_test_s": round(wall, 2),
        "rate_over_airflow_dags_test": round(count / wall, 2),
        "engine_requests_per_second": summary.get("requests_per_second"),
        "engine_seconds": summary.get("seconds"),
        "outcomes": outcomes,
        "rate_limit_pauses": summary.get("rate_limit_pauses"),
        "retries": summary.get("retries"),
    }
    figure.note = (
        f"seconds: the task's bulk run (its XCom summary); "
        f"`airflow dags test` took {wall:.1f} s: {count / wall:.1f}/s"
    )
    return figure


def provider_engine(
    sandbox: SandboxProcess, count: int, concurrency: int, rate_limit: float, workdir: Path
) -> Figure:
    """The bulk engine, from a CSV file, with a ledger, as the operators run it."""
    rows = prepare(sandbox, count)
    source = workdir / f"recipients-{count}.csv"
    write_recipients(source, count)
    ledger = workdir / f"ledger-{count}"
    with AhaChatClient(sandbox.bot_id, sandbox.token, sandbox.url, pool_size=concurrency) as client:
        action = client.bind("broadcast_block", block_name=BLOCK, attributes={"campaign": "bench"})
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
    figure = Figure(f"provider engine, {count:,} recipients", count, seconds, delivered)
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
                f"{100 * f.rate / limit:.1f}%" if limit > 0 else "-",
                unknown if f.lost is None else str(f.lost),
                unknown if f.doubled is None else str(f.doubled),
                str(f.refused_429),
                f.note,
            )
        )


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
        "--sizes",
        type=sizes(200_000),
        default=[2_000, 20_000],
        help="the provider's audiences, e.g. 2000,20000",
    )
    parser.add_argument(
        "--provider",
        choices=["operator", "engine", "both"],
        default="both",
        help="measure the provider through its operator under Airflow, its bulk engine alone, or both",
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
        args.naive, args.http, args.sizes, args.provider = min(args.naive, 20), 0, [300], "engine"
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
            f"{os.cpu_count()} CPUs, {platform.platform()}; load average {load_average()}"
        )
        if naive:
            figures.append(naive_loop(sandbox, naive, deadline_s=min(args.timeout, 120.0)))
            print(f"  done: {figures[-1].scenario}", flush=True)
        airflow: AirflowHome | None = None
        if http or args.provider != "engine":
            home = Path(tmp) / "airflow"
            home.mkdir()
            airflow = AirflowHome(home, sandbox, client_limit, args.concurrency)
            migrate = airflow.run(args.timeout, "db", "migrate")
            print(f"  Airflow home ready (airflow db migrate: {migrate:.1f} s)", flush=True)
        if http and airflow is not None:
            figures.append(http_operator(sandbox, airflow, http, timeout=args.timeout))
            print(f"  done: {figures[-1].scenario}", flush=True)
        for size in args.sizes:
            if args.provider != "engine" and airflow is not None:
                figures.append(provider_operator(sandbox, airflow, size, args.timeout, Path(tmp)))
                print(f"  done: {figures[-1].scenario}", flush=True)
            if args.provider != "operator":
                figures.append(provider_engine(sandbox, size, args.concurrency, client_limit, Path(tmp)))
                print(f"  done: {figures[-1].scenario}", flush=True)
        sandbox.reset()

    print_table(figures, args.rate_limit)
    print(f"\nload average at the end: {load_average()}")
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
            "load_average_at_end": load_average(),
            "figures": [{**asdict(f), "messages_per_second": round(f.rate, 2)} for f in figures],
            "target_met": not missed,
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return 1 if missed and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
