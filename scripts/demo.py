"""
The demo: the example DAG end to end on the local sandbox, then what each customer received.

It starts the sandbox, gives Airflow a throw-away home whose DAGs folder is ``example_dags/``,
runs ``airflow dags test example_ahachat_shipping_update`` exactly as a user would, with the
connection ``ahachat_sandbox`` in an ``AIRFLOW_CONN_`` variable, and prints the sandbox's outbox
customer by customer. Nobody real is messaged.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from airflow_provider_ahachat.sandbox import SandboxProcess

ROOT = Path(__file__).resolve().parent.parent
DAG_ID = "example_ahachat_shipping_update"
CONN_ID = "ahachat_sandbox"


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
    started = time.monotonic()
    with log.open("a") as out:
        code = subprocess.call([sys.executable, "-m", "airflow", *args], env=env, stdout=out, stderr=out)
    outcome = "ok" if code == 0 else f"exit {code}"
    print(f"  airflow {' '.join(args)}: {outcome} ({time.monotonic() - started:.1f}s)")
    if code != 0:
        print(log.read_text()[-6000:])
        raise SystemExit(f"airflow {' '.join(args)} failed; the full log is in {log}")


def delivered_text(entry: dict[str, Any]) -> list[str]:
    """What the customer saw, one line per message."""
    lines = []
    for message in entry.get("messages") or []:
        if "text" in message:
            replies = [r["title"] for r in message.get("quick_replies", [])]
            lines.append(message["text"] + (f"  [{' | '.join(replies)}]" if replies else ""))
        else:
            payload = message.get("attachment", {}).get("payload", {})
            buttons = [b.get("title", "") for b in payload.get("buttons", [])]
            lines.append(
                f"{payload.get('text') or message['attachment'].get('type')}  [{' | '.join(buttons)}]"
            )
    return lines


def main() -> None:
    with (
        tempfile.TemporaryDirectory(prefix="ahachat-demo-") as tmp,
        SandboxProcess(conn_id=CONN_ID) as sandbox,
    ):
        home = Path(tmp)
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
                how = entry["kind"]
                if how == "broadcast":
                    how = f"broadcast of block {entry['block_name']!r} with tag {entry['message_tag']}"
                print(f"  - {how}:")
                for line in delivered_text(entry):
                    print(f"      {line}")
        result = {"deliveries": len(outbox), "customers": len({e["messenger_user_id"] for e in outbox})}
        print("\n" + json.dumps(result))


if __name__ == "__main__":
    main()
