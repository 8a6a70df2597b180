"""
The demo: the example DAGs end to end on the local sandbox, then what the customers received.

It starts the sandbox, gives Airflow a throw-away home whose DAGs folder is ``example_dags/``,
and runs the examples with ``airflow dags test`` exactly as a user would, with the connection
``ahachat_sandbox`` in an ``AIRFLOW_CONN_`` variable:

- ``example_ahachat_shipping_update`` (all eight operators), then the sandbox's outbox customer by
  customer, and who Messenger's 24-hour window kept the update from (reported, not failed);
- Messenger's rules of December 2026 against those before 27 April 2026, on the sandbox's two
  settings: a retired tag refused, then delivered;
- ``example_ahachat_confirm_delivery``: asks Lan to confirm her delivery and waits for her answer
  with a deferrable sensor, while this script, acting as Lan, taps "Đã nhận" a few seconds later;
- ``example_ahachat_bulk_shipping``: a SQLite shop database with 2,000 orders shipped yesterday
  (a few of them for people the bot does not know, some for customers who last wrote days ago),
  sent in four mapped slices; then the totals and a check that nobody got the message twice;
- ``example_ahachat_order_status``, the other way round: Lan types her order code, the sandbox
  bot's JSON API step calls Airflow's webhook, and the asset-triggered DAG answers her. This one needs
  Airflow's scheduler (``airflow dags test`` cannot start a run from an event), so the demo starts
  ``airflow standalone`` on a free port in its own home for it, and stops it afterwards.
- ``example_ahachat_held_shipping``, on the same ``airflow standalone``: a shipping update for
  Châu, who last wrote 30 days ago, is held (Messenger refuses it outside the 24-hour window);
  when she asks the bot about her order, the answer to the bot's JSON API call carries it, after
  the acknowledgement; ``example_ahachat_held_followup`` then runs on the delivery and tags her.
- ``example_ahachat_refund_approval``: the shop owner is asked in Messenger to approve a refund,
  taps "Đồng ý" (through the sandbox, as AhaChat would call the button), and the DAG goes on: the
  refund runs and the customer is told. It too runs on ``airflow standalone``.

Nobody real is messaged.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from airflow_provider_ahachat.sandbox import SandboxProcess

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from helpers.airflow_processes import AirflowProcesses, wait_until

ROOT = Path(__file__).resolve().parent.parent
DAG_ID = "example_ahachat_shipping_update"
BULK_DAG_ID = "example_ahachat_bulk_shipping"
CONFIRM_DAG_ID = "example_ahachat_confirm_delivery"
LAN = "3824547807572463"
CHAU = "5281407936251407"  # last wrote 30 days ago: outside Messenger's 24-hour window
HELD_DAG_ID = "example_ahachat_held_shipping"
CONN_ID = "ahachat_sandbox"
BULK_ORDERS = 2_000
BULK_STRANGERS = 12  # orders of people who never wrote to the bot: AhaChat answers 404
BULK_OUTSIDE = 288  # customers who last wrote 3 days ago: outside Messenger's 24-hour window
ORDER_DAG_ID = "example_ahachat_order_status"
WEBHOOK_SECRET = "demo-webhook-secret-5b0e"


def airflow_env(home: Path, sandbox: SandboxProcess) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_"))}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "example_dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__LOGGING__COLORED_CONSOLE_LOG": "False",
            "AHACHAT_CONN_ID": CONN_ID,
            f"AIRFLOW_CONN_{CONN_ID.upper()}": sandbox.connection_uri,
        }
    )
    return env


def airflow(env: dict[str, str], log: Path, *args: str) -> None:
    """Run Airflow's command line, its output to ``log``; say every few seconds how far it is."""
    started = time.monotonic()
    command = " ".join(args)
    print(f"  airflow {command} ...", flush=True)
    offset = log.stat().st_size if log.exists() else 0
    with log.open("a") as out, ticking(lambda: dag_test_progress(log, offset)):
        code = subprocess.call([sys.executable, "-m", "airflow", *args], env=env, stdout=out, stderr=out)
    outcome = "ok" if code == 0 else f"exit {code}"
    print(f"  airflow {command}: {outcome} ({time.monotonic() - started:.1f}s)")
    if code != 0:
        print(log.read_text()[-6000:])
        raise SystemExit(f"airflow {command} failed; the full log is in {log}")


#: Every this many seconds of a long step, a line says what it is doing.
TICK_SECONDS = 5.0


class Ticker:
    """From ``start()`` to ``stop()``, prints what ``doing()`` says every ``TICK_SECONDS``."""

    def __init__(self, doing: Callable[[], str]) -> None:
        self.doing = doing
        self.done = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        started = time.monotonic()

        def tick() -> None:
            while not self.done.wait(TICK_SECONDS):
                print(f"    {time.monotonic() - started:3.0f}s: {self.doing()}", flush=True)

        self.thread = threading.Thread(target=tick, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.done.set()
        if self.thread is not None:
            self.thread.join()


@contextlib.contextmanager
def ticking(doing: Callable[[], str]) -> Iterator[None]:
    """While the block runs, print what ``doing()`` says every ``TICK_SECONDS``: no long silence."""
    ticker = Ticker(doing)
    ticker.start()
    try:
        yield
    finally:
        ticker.stop()


_TASK_STARTED = re.compile(r"\[DAG TEST\] starting task_id=(\S+) map_index=(-?\d+)")
_TASK_ENDED = re.compile(r"\[DAG TEST\] end task task_id=(\S+) map_index=(-?\d+)")


def dag_test_progress(log: Path, offset: int) -> str:
    """What ``airflow dags test`` is doing, from its log past ``offset``."""
    try:
        with log.open("rb") as stream:
            stream.seek(offset)
            text = stream.read().decode("utf-8", "replace")
    except OSError:
        return "Airflow is starting"
    started = _TASK_STARTED.findall(text)
    ended = _TASK_ENDED.findall(text)
    if not started:
        return "Airflow is starting (imports, the metadata database, parsing the DAG)"
    task, index = started[-1]
    name = task if index == "-1" else f"{task}[{index}]"
    state = "done" if ended and ended[-1] == started[-1] else "running"
    return f"{len(ended)} task(s) done; {name} {state}"


def delivered_text(entry: dict[str, Any]) -> list[str]:
    """What the customer saw, one line per message, as the sandbox words it."""
    return str(entry.get("text") or "").splitlines()


def main() -> None:
    print("Starting the AhaChat sandbox, in a process of its own ...", flush=True)
    with contextlib.ExitStack() as running:
        home = Path(running.enter_context(tempfile.TemporaryDirectory(prefix="ahachat-demo-")))
        with ticking(lambda: "the sandbox is starting"):
            sandbox = running.enter_context(SandboxProcess(conn_id=CONN_ID))
        log = home / "airflow.log"
        print(f"AhaChat sandbox at {sandbox.url} (bot {sandbox.bot_id}); Airflow home {home}")
        env = airflow_env(home, sandbox)
        airflow(env, log, "db", "migrate")
        airflow(env, log, "dags", "test", DAG_ID)

        users = {u["messenger_user_id"]: u for u in sandbox.users(sandbox.bot_id)}
        outbox = sandbox.outbox(bot_id=sandbox.bot_id)
        print(f"\nWhat each customer received ({len(outbox)} deliveries):")
        for user_id in dict.fromkeys(e["messenger_user_id"] for e in outbox):
            user = users[user_id]
            name = f"{user.get('last_name') or ''} {user.get('first_name') or ''}".strip()
            print(f"\n{name} ({user.get('phone')}, {user_id}); tags now: {', '.join(user['tags'])}")
            for entry in (e for e in outbox if e["messenger_user_id"] == user_id):
                print(f"  - {describe(entry)}:")
                for line in delivered_text(entry):
                    print(f"      {line}")
        customers = len({e["messenger_user_id"] for e in outbox})
        outside = outside_window(home / "ahachat" / "ledger", "notify_shipped")
        print("\nNot messaged: outside Messenger's 24-hour window (reported by the task, which succeeded):")
        for refused in outside:
            print(f"  - {who_was_not_reached(refused, users)}")
        rules = rules_demo(sandbox)
        confirm = confirm_delivery_demo(env, log, sandbox)
        bulk = bulk_demo(env, log, home, sandbox)
        order = order_status_demo(home, sandbox)
        refund = refund_approval_demo(home, sandbox)
        print("\nIn short:")
        print(
            f"  shipping update: {len(outbox)} deliveries to {customers} customers; "
            f"{len(outside)} outside the 24-hour window, reported"
        )
        print(
            f"  Messenger's rules: POST_PURCHASE_UPDATE {rules['2026']} in 2026, {rules['2025']} before April"
        )
        deferred = "waiting deferred" if confirm["deferred"] else "waiting on a worker"
        print(f"  confirm delivery: Lan answered {confirm['confirmed']!r}, the sensor {deferred}")
        print(
            f"  bulk: {bulk['reached']:,} of {bulk['orders']:,} orders' customers reached, "
            f"{bulk['outside']:,} outside the 24-hour window reported, {bulk['twice']} twice"
        )
        print(
            f"  order status: the bot's call answered {order['answered']}, the reply reached Lan "
            f"{order['reply_seconds']} s later: {order['reply']!r}"
        )
        print(
            f"  held: the update was {order['held']} for Châu; when she asked, the bot's answer "
            f"carried it ({order['held_shown']!r}), once; follow-up tag: {order['held_tag']}"
        )
        print(
            f"  refund approval: the owner tapped in Messenger, the run ended {refund['run']}, "
            f"the owner saw {refund['confirmation']!r}, the customer was told ({refund['customer_told']})"
        )
        print("\nNext: ./scripts/ui.sh shows the same DAGs, the sandbox and its connection in Airflow's UI.")


def describe(entry: dict[str, Any]) -> str:
    """How an outbox entry reached the customer: its kind, and a broadcast's block and tag."""
    if entry["kind"] != "broadcast":
        return str(entry["kind"])
    tag = f" with tag {entry['message_tag']}" if entry["message_tag"] else " (no tag: a standard message)"
    return f"broadcast of block {entry['block_name']!r}{tag}"


def who_was_not_reached(line: dict[str, Any], users: dict[str, dict[str, Any]]) -> str:
    """A customer outside the window, from their report line: name, last message, what Messenger said."""
    kind, _, key = line["recipient"].partition(" ")
    user = next(
        (u for u in users.values() if u.get("phone" if kind == "phone" else "messenger_user_id") == key), {}
    )
    name = f"{user.get('last_name') or ''} {user.get('first_name') or ''}".strip() or line["recipient"]
    last = user.get("last_interaction_at")
    ago = ""
    if last:
        wrote = datetime.datetime.fromisoformat(last.replace("Z", "+00:00"))
        ago = f", last wrote {(datetime.datetime.now(datetime.timezone.utc) - wrote).days} days ago"
    meta = re.search(r"\(#\d+\)[^()]*", line.get("reason") or "")
    return f"{name} ({line['recipient']}{ago}): Messenger answered {meta.group(0).strip() if meta else '?'}"


def outside_window(ledger: Path, task_id: str) -> list[dict[str, Any]]:
    """The report lines of a bulk task's customers outside Messenger's 24-hour window."""
    lines = []
    for report in ledger.rglob("report.jsonl"):
        if f"task_id={task_id}" in report.parts:
            lines += [json.loads(line) for line in report.read_text().splitlines()]
    return [line for line in lines if line["outcome"] == "outside_window"]


def rules_demo(sandbox: SandboxProcess) -> dict[str, str]:
    """A retired tag under Messenger's rules of December 2026, then under those before April 2026."""
    from airflow_provider_ahachat.client import AhaChatClient
    from airflow_provider_ahachat.exceptions import AhaChatMessageTagRefusedError

    print("\nMessenger's rules: a POST_PURCHASE_UPDATE broadcast to Lan, who wrote 30 minutes ago")
    outcome = {}
    # A connection that lets the retired tag through (its extra message_tags), to see what Messenger says.
    with AhaChatClient(
        sandbox.bot_id, sandbox.token, sandbox.url, message_tags="POST_PURCHASE_UPDATE"
    ) as client:
        for rules in ("2026", "2025"):
            sandbox.configure(messenger_rules=rules)
            try:
                client.run(
                    "broadcast_block",
                    {"block_name": "welcome", "message_tag": "POST_PURCHASE_UPDATE"},
                    user_id=LAN,
                )
                outcome[rules] = "delivered"
            except AhaChatMessageTagRefusedError as err:
                outcome[rules] = f"refused ({err.api_message})"
            label = (
                "as of December 2026" if rules == "2026" else "before 27 April 2026 (--messenger-rules 2025)"
            )
            print(f"  rules {label}: {outcome[rules]}")
    sandbox.configure(messenger_rules="2026")
    return outcome


def confirm_delivery_demo(env: dict[str, str], log: Path, sandbox: SandboxProcess) -> dict[str, Any]:
    """Ask Lan to confirm her delivery; answer as Lan while the sensor waits, deferred."""
    print("\nThe confirm-delivery example: ask Lan, wait for her answer without holding a worker, tag her")
    since = max((e["seq"] for e in sandbox.outbox()), default=0)
    answered: dict[str, float] = {}

    def lan_answers() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if any(e.get("block_name") == "confirm_delivery" for e in sandbox.outbox(LAN, since=since)):
                time.sleep(3)  # Lan reads the message, then taps "Đã nhận"
                sandbox.update_user(LAN, run_block="delivery_received")
                answered["at"] = time.monotonic()
                return
            time.sleep(0.2)

    customer = threading.Thread(target=lan_answers, daemon=True)
    customer.start()
    started = time.monotonic()
    airflow({**env, "AHACHAT_POKE_INTERVAL": "1"}, log, "dags", "test", CONFIRM_DAG_ID)
    customer.join(timeout=5)
    deferred = "running trigger in line" in log.read_text()
    lan = sandbox.user(LAN)
    for entry in sandbox.outbox(LAN, since=since):
        how = entry["kind"] if entry["kind"] != "broadcast" else f"broadcast of block {entry['block_name']!r}"
        print(f"  - {how}:")
        for line in delivered_text(entry):
            print(f"      {line}")
    waited = answered.get("at", started) - started
    print(f"  Lan answered {waited:.0f}s after the DAG started; the sensor was deferred: {deferred}")
    confirmed = lan["attributes"].get("delivery_confirmed")
    print(f"  delivery_confirmed={confirmed}; tags now: {', '.join(lan['tags'])}")
    return {
        "confirmed": lan["attributes"].get("delivery_confirmed"),
        "deferred": deferred,
        "tags": lan["tags"],
    }


def bulk_demo(env: dict[str, str], log: Path, home: Path, sandbox: SandboxProcess) -> dict[str, Any]:
    """Yesterday's 2,000 shipments from a shop database, through the bulk example DAG."""
    print(f"\nThe bulk example: {BULK_ORDERS:,} orders shipped yesterday, from a SQLite shop database")
    inside = sandbox.generate_users(BULK_ORDERS - BULK_STRANGERS - BULK_OUTSIDE, start=100_000)
    outside = sandbox.generate_users(BULK_OUTSIDE, start=200_000, in_window=False)
    customers = inside + outside
    strangers = [f"8{n:015d}" for n in range(BULK_STRANGERS)]
    audience = customers + strangers
    yesterday = (datetime.datetime.now(datetime.timezone.utc).date() - datetime.timedelta(days=1)).isoformat()
    database = home / "shop.db"
    with sqlite3.connect(database) as db:
        db.execute(
            "CREATE TABLE orders (customer_id INTEGER PRIMARY KEY, messenger_user_id TEXT,"
            " order_id TEXT, tracking_number TEXT, shipped_on TEXT)"
        )
        db.executemany(
            "INSERT INTO orders VALUES (?, ?, ?, ?, ?)",
            [(n, uid, f"DH{n:06d}", f"GHN{n:08d}VN", yesterday) for n, uid in enumerate(audience)],
        )
    before = sandbox.stats()["total"]
    bulk_env = {
        **env,
        "AIRFLOW_CONN_SHOP_DB": json.dumps({"conn_type": "sqlite", "host": str(database)}),
        "AIRFLOW__AHACHAT__LEDGER_PATH": str(home / "ledger"),
        "AHACHAT_RATE_LIMIT": "500",
    }
    started = time.monotonic()
    airflow(bulk_env, log, "dags", "test", BULK_DAG_ID)
    elapsed = time.monotonic() - started

    outcomes: dict[str, dict[str, int]] = {}
    for report in sorted((home / "ledger").rglob("report.jsonl")):
        task = next(part for part in report.parts if part.startswith("task_id=")).removeprefix("task_id=")
        counts = outcomes.setdefault(task, {})
        for line in report.read_text().splitlines():
            outcome = json.loads(line)["outcome"]
            counts[outcome] = counts.get(outcome, 0) + 1
    counts_by_user = sandbox.outbox_counts()
    reached = [uid for uid in customers if counts_by_user.get(uid)]
    twice = [uid for uid in audience if counts_by_user.get(uid, 0) > 1]
    print(f"  {sandbox.stats()['total'] - before:,} requests to AhaChat in {elapsed:.1f}s (Airflow included)")
    for task, counts in outcomes.items():
        print(f"  {task}: " + ", ".join(f"{n:,} {outcome}" for outcome, n in sorted(counts.items())))
    print(f"  {len(reached):,} of {len(customers):,} known customers got the shipping update;", end=" ")
    print(f"{len(twice)} got it twice")
    left = sum(counts.get("outside_window", 0) for counts in outcomes.values())
    print(f"  {left:,} last wrote more than 24 hours ago: reported as outside_window, and tagged for later")
    return {
        "orders": len(audience),
        "reached": len(reached),
        "outside": left,
        "twice": len(twice),
        "outcomes": outcomes,
    }


def order_status_demo(home: Path, sandbox: SandboxProcess) -> dict[str, Any]:
    """Lan asks the bot about her order; the bot calls Airflow; the DAG answers her in Messenger."""
    print("\nThe order-status example: Lan asks where her order is, the bot calls Airflow, the DAG answers")
    dags = home / "order_status_dags"
    dags.mkdir()
    shutil.copy(ROOT / "example_dags" / f"{ORDER_DAG_ID}.py", dags)
    shutil.copy(ROOT / "example_dags" / f"{HELD_DAG_ID}.py", dags)
    shop = home / "order_status_shop.db"
    with sqlite3.connect(shop) as db:
        db.execute(
            "CREATE TABLE orders (order_id TEXT PRIMARY KEY, messenger_user_id TEXT, status TEXT,"
            " eta TEXT, tracking_number TEXT)"
        )
        eta = (datetime.date.today() + datetime.timedelta(days=2)).strftime("%d/%m")  # in two days
        db.execute("INSERT INTO orders VALUES ('DH10231', ?, 'dang_giao', ?, 'GHN8123456VN')", (LAN, eta))
        chau_eta = (datetime.date.today() + datetime.timedelta(days=3)).strftime("%d/%m")
        db.execute(
            "INSERT INTO orders VALUES ('DH10240', ?, 'dang_giao', ?, 'GHN8123499VN')", (CHAU, chau_eta)
        )
    env = {
        f"AIRFLOW_CONN_{CONN_ID.upper()}": f"{sandbox.connection_uri}?webhook_secret={WEBHOOK_SECRET}"
        "&webhook_replies=%C4%90ang+tra+c%E1%BB%A9u+%C4%91%C6%A1n+h%C3%A0ng%E2%80%A6",
        "AIRFLOW_CONN_SHOP_DB": json.dumps({"conn_type": "sqlite", "host": str(shop)}),
        "AHACHAT_CONN_ID": CONN_ID,
        "AIRFLOW__AHACHAT__LEDGER_PATH": str(home / "order_status_ledger"),
    }
    started = time.monotonic()
    with contextlib.ExitStack() as running:
        standalone = start_standalone(running, home / "standalone", dags, env, ORDER_DAG_ID)
        print(f"  airflow standalone on {standalone.url}: ready in {time.monotonic() - started:.0f}s")
        # The bot's block that takes the order code ends with a JSON API step that calls Airflow.
        sandbox.set_json_api(
            "hoi_don_hang",
            {
                "url": f"{standalone.url}/ahachat/webhooks/{CONN_ID}/order_status",
                "headers": {"X-AhaChat-Secret": WEBHOOK_SECRET},
                "body": {"messenger_user_id": "{{messenger_user_id}}", "order_code": "{{order_code}}"},
                "timeout": 120,
            },
        )
        since = max((e["seq"] for e in sandbox.outbox()), default=0)
        # Lan types her order code: the bot saves it and reaches the block.
        sandbox.update_user(LAN, attributes={"order_code": "DH10231"})
        asked_at = datetime.datetime.now()
        asked = time.monotonic()
        sandbox.update_user(LAN, run_block="hoi_don_hang")
        (call,) = sandbox.json_api_calls(limit=1)
        print(
            f"  the bot called Airflow: {call['status']} in {call['duration_ms'] / 1000:.2f}s;"
            " Lan sees at once:"
        )
        for entry in sandbox.outbox(LAN, since=since):
            for line in delivered_text(entry):
                print(f"      {line}")
        try:
            with ticking(lambda: "the event's run looks the order up and answers (two tasks)"):
                replies = wait_until(
                    lambda: [e for e in sandbox.outbox(LAN, since=since) if e["kind"] == "text"],
                    600,
                    "the answer to Lan",
                    0.1,
                )
        except TimeoutError:
            print(standalone.log_tail(6000))
            raise
        took = time.monotonic() - asked
        print(f"  Lan asked about DH10231 at {asked_at:%H:%M:%S}; the answer reached her {took:.1f}s later:")
        for line in delivered_text(replies[0]):
            print(f"      {line}")
        tags = sandbox.user(LAN)["tags"]
        print(f"  tags now: {', '.join(tags)}")
        held = held_demo(standalone, sandbox)
    return {
        "answered": call["status"],
        "reply_seconds": round(took, 1),
        "reply": replies[0]["text"],
        **held,
    }


def held_demo(standalone: AirflowProcesses, sandbox: SandboxProcess) -> dict[str, Any]:
    """A shipping update held for Châu, outside the window, and shown when she next asks the bot."""
    print("\nHeld until the customer writes: a shipping update for Lan and for Châu (last wrote 30 days ago)")
    answer = urllib.request.urlopen(
        urllib.request.Request(
            f"{standalone.url}/api/v2/dags/{HELD_DAG_ID}/dagRuns",
            data=json.dumps({"logical_date": None, "conf": {"customers": [LAN, CHAU]}}).encode(),
            headers={"Content-Type": "application/json", **standalone.auth_headers},
        ),
        timeout=120,
    )
    run_id = json.loads(answer.read())["dag_run_id"]
    run = wait_until(
        lambda: [r for r in standalone.dag_runs(HELD_DAG_ID) if r["dag_run_id"] == run_id and r["state"] in
                 ("success", "failed")],
        600,
        "the held shipping run",
        0.5,
    )[0]  # fmt: skip
    summary = standalone.get_json(
        f"/api/v2/dags/{HELD_DAG_ID}/dagRuns/{run_id}/taskInstances/notify_shipped/xcomEntries/return_value"
    )
    outcomes = json.loads(summary["value"])["outcomes"] if isinstance(summary["value"], str) else (
        summary["value"]["outcomes"]
    )  # fmt: skip
    print(f"  the run ended {run['state']}: {outcomes} (Lan got it now; Châu's waits for her)")
    since = max((e["seq"] for e in sandbox.outbox()), default=0)
    # Châu writes "đơn của em đâu?" with her order code, and the bot reaches the JSON API block.
    sandbox.update_user(CHAU, touch=True, attributes={"order_code": "DH10240"})
    sandbox.update_user(CHAU, run_block="hoi_don_hang")
    first = [e for e in sandbox.outbox(CHAU, since=since) if e["kind"] == "json_api"]
    print("  Châu asks about DH10240; the answer to the bot's call shows her at once:")
    for entry in first:
        for line in delivered_text(entry):
            print(f"      {line}")
    sandbox.update_user(CHAU, run_block="hoi_don_hang")
    again = [e for e in sandbox.outbox(CHAU, since=since) if e["kind"] == "json_api"][len(first) :]
    twice = any("GHN8123499VN" in str(e.get("text")) for e in again)
    print(
        f"  she asks again: {'the update again!' if twice else 'the acknowledgement only (delivered once)'}"
    )
    wait_until(lambda: "da_nhan_cap_nhat" in sandbox.user(CHAU)["tags"], 600, "the follow-up run", 0.5)
    print(
        "  example_ahachat_held_followup ran on the delivery (held_delivered) and tagged her da_nhan_cap_nhat"
    )
    shown = " / ".join(line for e in first for line in delivered_text(e))
    return {"held": f"{outcomes.get('held', 0)} held", "held_shown": shown, "held_tag": "da_nhan_cap_nhat"}


def start_standalone(
    running: contextlib.ExitStack, home: Path, dags: Path, env: dict[str, str], dag_id: str
) -> AirflowProcesses:
    """``airflow standalone`` on a free port, stopped when ``running`` closes, once it knows ``dag_id``."""
    print("  starting airflow standalone (api-server, scheduler, dag-processor, triggerer) ...", flush=True)
    stopping = Ticker(lambda: "Airflow's processes are stopping")
    running.callback(stopping.stop)  # closed last, once Airflow has stopped
    with ticking(lambda: "Airflow is starting and parsing the example"):
        standalone = running.enter_context(AirflowProcesses(home, dags_folder=dags, env=env))
        standalone.wait_for_dag(dag_id)

    def say_stopping() -> None:  # closed first, before Airflow stops
        print("  stopping airflow standalone ...", flush=True)
        stopping.start()

    running.callback(say_stopping)
    return standalone


REFUND_DAG_ID = "example_ahachat_refund_approval"
SHOP_OWNER = "6620193847561029"
APPROVAL_SECRET = "demo-approval-secret-9d41"


def refund_approval_demo(home: Path, sandbox: SandboxProcess) -> dict[str, Any]:
    """The owner approves a refund with one tap in Messenger; the DAG refunds and tells Lan."""
    print("\nThe refund-approval example: the owner is asked in Messenger, taps Đồng ý, the DAG goes on")
    dags = home / "refund_dags"
    dags.mkdir()
    shutil.copy(ROOT / "example_dags" / f"{REFUND_DAG_ID}.py", dags)
    shop = home / "refund_shop.db"
    with sqlite3.connect(shop) as db:
        db.execute(
            "CREATE TABLE refund_requests (order_id TEXT PRIMARY KEY, messenger_user_id TEXT,"
            " amount INTEGER, status TEXT)"
        )
        db.execute("INSERT INTO refund_requests VALUES ('DH10231', ?, 450000, 'requested')", (LAN,))
    env = {
        f"AIRFLOW_CONN_{CONN_ID.upper()}": f"{sandbox.connection_uri}?approval_secret={APPROVAL_SECRET}",
        "AIRFLOW_CONN_SHOP_DB": json.dumps({"conn_type": "sqlite", "host": str(shop)}),
        "AHACHAT_CONN_ID": CONN_ID,
        "SHOP_OWNER_ID": SHOP_OWNER,
    }
    since = max((e["seq"] for e in sandbox.outbox()), default=0)
    with contextlib.ExitStack() as running:
        standalone = start_standalone(running, home / "refund_standalone", dags, env, REFUND_DAG_ID)
        print("  a run for DH10231: load the request, then ask the owner in Messenger ...", flush=True)
        request = urllib.request.Request(
            f"{standalone.url}/api/v2/dags/{REFUND_DAG_ID}/dagRuns",
            data=json.dumps({"logical_date": None, "conf": {"order_id": "DH10231"}}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=120) as answer:
            run_id = json.loads(answer.read())["dag_run_id"]
        try:
            with ticking(lambda: "the run loads the refund request and asks the owner"):
                (question,) = wait_until(
                    lambda: [e for e in sandbox.outbox(SHOP_OWNER, since=since) if e["kind"] == "dynamic"],
                    600,
                    "the question to the owner",
                    0.5,
                )
        except TimeoutError:
            print(standalone.log_tail(6000))
            raise
        print("  the owner's Messenger shows:")
        for line in delivered_text(question):
            print(f"      {line}")
        tapped = sandbox.tap(SHOP_OWNER, "Đồng ý", seq=question["seq"])
        print(f"  the owner taps Đồng ý; the bot shows: {tapped['reply']['text']}")

        def finished() -> str | None:
            run = standalone.get_json(f"/api/v2/dags/{REFUND_DAG_ID}/dagRuns/{run_id}")
            return run["state"] if run and run["state"] in ("success", "failed") else None

        with ticking(lambda: "the answer is recorded; the run refunds and tells Lan"):
            state = wait_until(finished, 600, "the refund run to finish", 1.0)
        told = [e for e in sandbox.outbox(LAN, since=since) if e["kind"] == "text"]
        print(f"  the run: {state}; Lan received:")
        for entry in told:
            for line in delivered_text(entry):
                print(f"      {line}")
    return {"run": state, "confirmation": tapped["reply"]["text"], "customer_told": len(told)}


if __name__ == "__main__":
    main()
