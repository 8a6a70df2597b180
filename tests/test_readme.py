"""
Every Python block of the README compiles, and runs:

- the hook-and-client block for real against the sandbox;
- block 2 ("Beyond one worker", the mapped SQL example) for real with ``dag.test()``, against a
  PostgreSQL database shaped as it expects and the sandbox;
- the operator, bulk, sensor, notifier and approval blocks as DAG code: they build their tasks
  inside a DAG, which checks every argument Airflow and the operators check at parse time. They
  name customers and files of the reader's, so they are not sent. A block that makes its own DAG
  (the event-scheduled one) runs as written; two (the sandbox's JSON API step and the generic
  call, which name the reader's secret and path) are compiled only.

The blocks' own text is what runs, with the names an earlier block imports (or that the text says
come from the reader, such as ``find_repeat_buyers()``) provided.
"""

from __future__ import annotations

import datetime
import re
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_ahachat.sandbox import SandboxServer

pytest_plugins = ["postgres_fixtures"]

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = [m.group(1) for m in re.finditer(r"^```python\n(.*?)^```", README.read_text("utf-8"), re.S | re.M)]

#: What each block is, so that a new block must be added here (and so decided about).
KINDS = {
    0: "dag code",  # the operators
    1: "dag code",  # many recipients
    2: "run on postgres",  # beyond one worker
    3: "dag code",  # UserSensor
    4: "dag code",  # the notifier (it makes its own DAG)
    5: "own dag",  # a DAG scheduled on the bot's events
    6: "compile",  # the sandbox's JSON API step, with the reader's secret
    7: "dag code",  # approvals from Messenger
    8: "run",  # the hook and the client
    9: "compile",  # the generic call (the reader's own path)
}
HOOK_BLOCK = next(n for n, kind in KINDS.items() if kind == "run")


def test_every_block_is_known_and_compiles() -> None:
    assert len(BLOCKS) == len(KINDS), "a README block was added or removed: say in KINDS how it is tested"
    for number, code in enumerate(BLOCKS):
        compile(code, f"README.md python block {number}", "exec")


def namespace() -> dict[str, Any]:
    from airflow.sdk import DAG, task

    from airflow_provider_ahachat.transfers.sql_to_ahachat import SqlToAhaChatOperator

    @task
    def find_repeat_buyers() -> list[str]:  # the reader's own task, as the block's comment says
        return ["3824547807572463"]

    return {
        "DAG": DAG,
        "task": task,
        "SqlToAhaChatOperator": SqlToAhaChatOperator,
        "find_repeat_buyers": find_repeat_buyers,
    }


@pytest.mark.usefixtures("airflow_db")
@pytest.mark.parametrize("number", [n for n, kind in KINDS.items() if kind == "dag code"])
def test_blocks_build_their_tasks_in_a_dag(number: int) -> None:
    from airflow.sdk import DAG

    names = namespace()
    with DAG(f"readme_block_{number}", schedule=None) as dag:
        exec(compile(BLOCKS[number], f"README.md python block {number}", "exec"), names)
    assert dag.task_dict or "send_ahachat_notification" in BLOCKS[number]


@pytest.mark.usefixtures("airflow_db")
@pytest.mark.parametrize("number", [n for n, kind in KINDS.items() if kind == "own dag"])
def test_blocks_that_make_their_own_dag_build_it(number: int) -> None:
    names: dict[str, Any] = {}
    exec(compile(BLOCKS[number], f"README.md python block {number}", "exec"), names)
    from airflow.sdk import DAG

    dags = [value for value in names.values() if isinstance(value, DAG)]
    tasks = [task for value in names.values() for task in getattr(value, "task_dict", {}).values()]
    assert dags or tasks or "with DAG(" in BLOCKS[number]


def test_the_hook_block_runs_against_the_sandbox(sandbox_connection: SandboxServer) -> None:
    sandbox = sandbox_connection
    lan = sandbox.user("3824547807572463")
    assert lan["phone"] == "+84908071111"

    exec(compile(BLOCKS[HOOK_BLOCK], f"README.md python block {HOOK_BLOCK}", "exec"), {})

    (entry,) = sandbox.outbox(lan["messenger_user_id"])
    assert entry["attributes"] == {"order_id": "DH10231"}
    assert entry["message_tag"] is None  # no tag by default: Lan wrote 30 minutes ago


@pytest.mark.usefixtures("airflow_db")
def test_the_mapped_example_runs_on_postgres(
    dag_runner: Any,
    sandbox: SandboxServer,
    postgres: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ "Beyond one worker": eight slices of a PostgreSQL query, each customer messaged once."""
    from airflow.models.pool import Pool
    from airflow.sdk import DAG

    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))  # the ledger, by default under it
    Pool.create_or_update_pool("ahachat", 4, "for the README's example", include_deferred=False)
    ids = sandbox.generate_users(20)
    database = postgres.new_database()
    conn = postgres.connect(database)
    with conn, conn.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE orders (customer_id INTEGER, messenger_user_id TEXT, tracking_number TEXT, "
            "shipped_on DATE)"
        )
        for n, uid in enumerate(ids):
            shipped = "2026-11-11" if n < 16 else "2026-11-10"
            cursor.execute("INSERT INTO orders VALUES (%s, %s, %s, %s)", (n, uid, f"GHN{n}", shipped))
    conn.close()
    with DAG("readme_mapped", schedule=None) as dag:
        exec(compile(BLOCKS[2], "README.md python block 2", "exec"), namespace())

    day = datetime.datetime(2026, 11, 11, tzinfo=datetime.timezone.utc)
    result = dag_runner(
        dag,
        {"ahachat_default": sandbox.connection_uri, "shop_postgres": postgres.uri(database)},
        logical_date=day,
    )

    assert result.succeeded, result.summary()
    assert sandbox.outbox_counts() == dict.fromkeys(ids[:16], 1)
    for n, uid in enumerate(ids[:16]):
        assert sandbox.outbox(uid)[0]["attributes"] == {"tracking_number": f"GHN{n}"}
    assert sandbox.token not in result.log
