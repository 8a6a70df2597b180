"""
``outside_window="hold"`` on every operator that messages customers, inside Airflow against the
sandbox in its 2026 mode: a single send, a run for many (``recipients=``) and the SQL transfer hold
the message of each customer Messenger refuses as outside the window, in the store Airflow's
configuration names, and report it; a retry holds nothing more; bad values fail when the DAG is
parsed, naming the field.
"""

from __future__ import annotations

import datetime
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from helpers.dag_helpers import CONN, SHOP, new_dag, report, run_with_ledger
from helpers.paths import EXAMPLE_DAGS
from helpers.window_helpers import BAO, SINGLE_SENDS, ThirdOutside, many_operator

from airflow_provider_ahachat.exceptions import AhaChatValidationError
from airflow_provider_ahachat.held.store import HeldStore, Selection
from airflow_provider_ahachat.sandbox import SandboxServer

#: The message each single send holds, as the answer to the customer's call will carry it.
HELD_AS = {
    "text": {"messages": [{"text": "Đơn hàng của bạn đã được giao."}]},
    "dynamic": {"messages": [{"text": "Chào Bảo"}]},
    "broadcast_by_user": {"redirect_to_blocks": ["welcome"]},
    "broadcast_by_phone": {"redirect_to_blocks": ["welcome"]},
}


def held(path: Path) -> list[dict[str, Any]]:
    """Everything still held for the connection's customers, oldest first."""
    store = HeldStore.sqlite(path)
    return [h.to_json(store.clock()) for h in store.select(Selection(CONN))]


def posts(sandbox: SandboxServer) -> list[dict[str, Any]]:
    return [r for r in sandbox.request_log(limit=10_000) if r["method"] == "POST"]


@pytest.mark.usefixtures("airflow_db")
@pytest.mark.parametrize("kind", SINGLE_SENDS)
def test_a_single_send_outside_the_window_is_held_once_and_the_task_succeeds(
    dag_runner: Any, sandbox: SandboxServer, tmp_path: Path, kind: str
) -> None:
    from airflow_provider_ahachat.operators import ahachat

    arguments = dict(SINGLE_SENDS[kind])
    operator = getattr(ahachat, arguments.pop("operator"))
    path = tmp_path / "held.sqlite3"
    logical_date = datetime.datetime(2026, 12, 1, tzinfo=datetime.timezone.utc)
    with new_dag(f"hold_one_{kind}") as dag:
        operator(task_id="send", outside_window="hold", hold_for=datetime.timedelta(days=2), **arguments)
    env = {"AIRFLOW__AHACHAT__HELD_PATH": str(path)}

    first = run_with_ledger(
        dag_runner, dag, sandbox, env=env, logical_date=logical_date, run_after=logical_date
    )
    again = run_with_ledger(
        dag_runner, dag, sandbox, env=env, logical_date=logical_date, run_after=logical_date
    )

    assert first.task_states == {"send": "success"}, first.summary()
    result = first.xcoms["send"]
    assert (result["held"], result["user_id"], result["action"]) == (1, BAO, operator.action)
    assert "outside of allowed window" in result["reason"]
    (message,) = held(path)
    assert (message["messenger_user_id"], message["kind"], message["task_id"]) == (
        BAO,
        operator.action,
        "send",
    )
    assert message["message"] == HELD_AS[kind]
    hold_for = datetime.datetime.fromisoformat(message["expires_at"]) - datetime.datetime.fromisoformat(
        message["held_at"]
    )
    assert hold_for == datetime.timedelta(days=2)
    assert result["held_id"] == message["id"]
    assert "held (message" in first.log
    assert again.run_id == first.run_id and again.succeeded
    assert len(held(path)) == 1  # the retry held nothing more
    assert len(posts(sandbox)) == 2 and sandbox.outbox() == []  # one refused send per try, nothing shown


@pytest.mark.usefixtures("airflow_db")
def test_a_run_of_many_sends_inside_the_window_and_holds_for_the_others(
    dag_runner: Any, sandbox: SandboxServer, tmp_path: Path, third: ThirdOutside
) -> None:
    kind, inside, outside, people, audience, conns = third
    path = tmp_path / "held.sqlite3"
    env = {"AIRFLOW__AHACHAT__HELD_PATH": str(path)}
    logical_date = datetime.datetime(2026, 12, 1, tzinfo=datetime.timezone.utc)
    with new_dag(f"hold_many_{kind}") as dag:
        many_operator(kind, audience, str(tmp_path / "ledger"), outside_window="hold", max_failure_ratio=0)
    when = {"logical_date": logical_date, "run_after": logical_date}

    first = run_with_ledger(dag_runner, dag, sandbox, tmp_path, conns=conns, env=env, **when)

    assert first.succeeded, first.summary()
    summary = first.xcoms["send"]
    assert summary["outcomes"] == {"delivered": 8, "held": 4}, summary
    assert summary["held"] == 4
    lines = [line for line in report(summary) if line["outcome"] == "held"]
    assert len(lines) == 4 and all("held for the customer's next call" in line["reason"] for line in lines)
    assert "4 held for the customer's next call" in first.log
    stored = held(path)
    # By user ID, phones looked up; one each (the workers hold them in any order: one per customer).
    assert sorted(m["messenger_user_id"] for m in stored) == sorted(outside)
    if kind == "sql_transfer":  # the row's own columns ride on the broadcast, as they would have
        assert {m["messenger_user_id"]: m["message"]["set_attributes"]["order_id"] for m in stored} == {
            uid: f"DH{people.index(uid)}" for uid in outside
        }
    assert sandbox.outbox_counts() == dict.fromkeys(inside, 1)
    asked = Counter((r["path"], r["query"].get("phone")) for r in posts(sandbox))
    assert sum(asked.values()) == 12 and set(asked.values()) == {1}
    before = sandbox.stats()["total"]

    second = run_with_ledger(dag_runner, dag, sandbox, tmp_path, conns=conns, env=env, **when)

    assert second.run_id == first.run_id and second.succeeded, second.summary()
    assert second.xcoms["send"]["outcomes"] == {"delivered": 8, "held": 4}
    assert sandbox.stats()["total"] == before  # nobody asked again
    assert len(held(path)) == 4  # nothing held twice
    assert "4 held for the customer's next call (4 by earlier tries)" in second.log


@pytest.mark.usefixtures("airflow_db")
def test_a_store_that_cannot_be_opened_fails_the_task_before_anything_is_sent(
    dag_runner: Any, sandbox: SandboxServer, tmp_path: Path
) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    outside = sandbox.generate_users(2, start=100, in_window=False)
    with new_dag("hold_no_store") as dag:
        many_operator(
            "text", [{"user_id": u} for u in outside], str(tmp_path / "ledger"), outside_window="hold"
        )

    result = run_with_ledger(
        dag_runner, dag, sandbox, env={"AIRFLOW__AHACHAT__HELD_PATH": str(blocker / "held.sqlite3")}
    )

    assert result.task_states == {"send": "failed"}, result.summary()
    assert posts(sandbox) == []


def _operators() -> dict[str, Any]:
    from airflow_provider_ahachat.operators.ahachat import (
        AddTagsOperator,
        BroadcastBlockOperator,
        SendTextMessageOperator,
    )
    from airflow_provider_ahachat.transfers.sql_to_ahachat import SqlToAhaChatOperator

    return {
        "text": lambda **kw: SendTextMessageOperator(task_id="t", text="x", user_id=BAO, **kw),
        "broadcast": lambda **kw: BroadcastBlockOperator(
            task_id="t", block_name="welcome", recipients=[BAO], **kw
        ),
        "sql": lambda **kw: SqlToAhaChatOperator(
            task_id="t", sql="SELECT 1", sql_conn_id=SHOP, action="send_text", text="x", **kw
        ),
        "tags": lambda **kw: AddTagsOperator(task_id="t", tags=["vip"], user_id=BAO, **kw),
    }


BAD = [
    ("text", {"outside_window": "later"}, 'outside_window: must be one of "fail", "skip", "hold"'),
    ("text", {"outside_window": "hold", "hold_for": 0}, "hold_for: must be a timedelta or seconds"),
    ("broadcast", {"outside_window": "hold", "hold_for": -60}, "hold_for: must be"),
    ("sql", {"outside_window": "hold", "hold_for": "7d"}, "hold_for: must be"),
    ("sql", {"outside_window": "hold", "hold_for": datetime.timedelta(days=91)}, "at most 90 days"),
    ("text", {"outside_window": "hold", "hold_for": float("nan")}, "hold_for: must be"),
    ("broadcast", {"hold_for": 3600}, 'hold_for: only with outside_window="hold"'),
    ("sql", {"outside_window": "skip", "hold_for": 3600}, 'hold_for: only with outside_window="hold"'),
    ("tags", {"outside_window": "hold"}, "outside_window: the action 'add_tags' messages nobody"),
]


@pytest.mark.usefixtures("airflow_db")
@pytest.mark.parametrize(("operator", "kwargs", "message"), BAD)
def test_bad_outside_window_and_hold_for_fail_when_the_dag_is_parsed(
    operator: str, kwargs: dict[str, Any], message: str
) -> None:
    with new_dag("bad_hold"), pytest.raises(AhaChatValidationError) as caught:
        _operators()[operator](**kwargs)
    assert message in str(caught.value)


@pytest.mark.usefixtures("airflow_db")
def test_good_hold_for_values_are_taken() -> None:
    for n, value in enumerate((60, 3600.5, datetime.timedelta(days=7), datetime.timedelta(days=90), None)):
        for make in ("text", "broadcast", "sql"):
            with new_dag(f"good_hold_{n}_{make}"):
                assert _operators()[make](outside_window="hold", hold_for=value).hold_for == value


@pytest.mark.usefixtures("airflow_db")
def test_the_held_shipping_example_delivers_inside_the_window_and_holds_outside(
    dag_runner: Any, sandbox: SandboxServer, tmp_path: Path
) -> None:
    import importlib.util

    path = EXAMPLE_DAGS / "example_ahachat_held_shipping.py"
    spec = importlib.util.spec_from_file_location("example_ahachat_held_shipping", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    chau = "5281407936251407"  # last wrote 30 days ago

    result = run_with_ledger(
        dag_runner,
        module.dag,
        sandbox,
        tmp_path,
        conns={"ahachat_sandbox": sandbox.connection_uri},
        env={"AIRFLOW__AHACHAT__HELD_PATH": str(tmp_path / "held.sqlite3")},
    )

    assert result.succeeded, result.summary()
    assert result.xcoms["notify_shipped"]["outcomes"] == {"delivered": 1, "held": 1}
    (message,) = held_for(tmp_path / "held.sqlite3", "ahachat_sandbox")
    assert message["messenger_user_id"] == chau
    assert message["message"] == {
        "messages": [{"text": "Đơn DH10240 của bạn đã được gửi đi, mã vận đơn GHN8123499VN."}]
    }


def held_for(path: Path, conn_id: str) -> list[dict[str, Any]]:
    store = HeldStore.sqlite(path)
    return [h.to_json(store.clock()) for h in store.select(Selection(conn_id))]


def test_a_message_that_cannot_be_held_fails_its_row_and_the_next_try_holds_it(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    """The store breaks part-way (its table gone): nothing lost, nothing held twice, asked again."""
    from sqlalchemy import text

    from airflow_provider_ahachat.bulk import AhaChatBulkError, BulkRunner, Ledger
    from airflow_provider_ahachat.client import AhaChatClient
    from airflow_provider_ahachat.held.delivery import Holder
    from airflow_provider_ahachat.held.store import TaskRef

    inside = sandbox.generate_users(2)
    outside = sandbox.generate_users(2, start=100, in_window=False)
    path = tmp_path / "held.sqlite3"
    task = TaskRef("shipping", "manual__1", "notify")

    def run(store: HeldStore) -> dict[str, Any]:
        with AhaChatClient(sandbox.bot_id, sandbox.token, sandbox.url) as client:
            holder = Holder.of(
                store, conn_id=CONN, bot_id=sandbox.bot_id, action="send_text",
                arguments={"text": "Đơn đã gửi"}, hold_for=None, task=task,
            )  # fmt: skip
            runner = BulkRunner(
                client, client.bind("send_text", {"text": "Đơn đã gửi"}), ledger=Ledger(tmp_path / "ledger"),
                outside_window="hold", holder=holder, progress_interval=60,
            )  # fmt: skip
            try:
                return runner.run([*inside, *outside])
            except AhaChatBulkError as err:
                return {**err.summary, "error": str(err)}

    broken = HeldStore.sqlite(path)
    broken.select(Selection(CONN))  # the table is made...
    with broken.engine.begin() as connection:
        connection.execute(text("DROP TABLE ahachat_held"))  # ...and lost

    first = run(broken)

    assert first["outcomes"] == {"delivered": 2, "failed": 2}, first
    reasons = [line["reason"] for line in report(first) if line["outcome"] == "failed"]
    assert all("the message could not be held: OperationalError" in r for r in reasons), reasons
    assert all("[SQL" not in r and "Đơn" not in r for r in reasons)  # the first line only

    second = run(HeldStore.sqlite(path))

    assert second["outcomes"] == {"delivered": 2, "held": 2}, second
    assert sorted(m["messenger_user_id"] for m in held_for(path, CONN)) == sorted(outside)
    assert sandbox.outbox_counts() == dict.fromkeys(inside, 1)
