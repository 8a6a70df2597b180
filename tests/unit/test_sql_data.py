"""
From data to chat without surprises: every column named must exist (queries and files), NULLs and
repeats are explicit choices, one message per order when asked, exact numbers, a total and one
summary line in the log. Real SQLite files, real HTTP to the sandbox, operators inside Airflow (the
same on PostgreSQL: ``tests/integration/test_sql_postgres.py``). Every mistake is shown to send nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from helpers.dag_helpers import (
    SHOP,
    ahachat_lines,
    assert_nothing_sent,
    new_dag,
    report,
    run_sql_dag,
    run_sqlite_dag,
    sql_transfer,
    sqlite_table,
)

from airflow_provider_ahachat.bulk import BulkRunner, Columns, Ledger
from airflow_provider_ahachat.client import AhaChatClient
from airflow_provider_ahachat.sandbox import SandboxServer
from airflow_provider_ahachat.transfers.sql_to_ahachat import SqlToAhaChatOperator

pytestmark = pytest.mark.usefixtures("airflow_db")


def orders_db(path: Path, rows: Iterable[tuple[Any, ...]]) -> Path:
    """Rows of (psid, phone, order_id, tracking_number)."""
    return sqlite_table(
        path, "CREATE TABLE orders (psid TEXT, phone TEXT, order_id TEXT, tracking_number TEXT)", rows
    )


# --------------------------------------------------------------------------- columns


def test_every_column_named_must_be_in_the_query(
    dag_runner: Any, sandbox: SandboxServer, tmp_path: Path
) -> None:
    """A typo in a column name fails before the first request, listing the query's columns."""
    ids = sandbox.generate_users(3)
    phones = [sandbox.user(uid)["phone"] for uid in ids]
    db = orders_db(tmp_path / "shop.db", [(uid, phones[n], f"DH{n}", f"T{n}") for n, uid in enumerate(ids)])
    select = "SELECT psid, phone, order_id, tracking_number FROM orders"
    common: dict[str, Any] = {
        "action": "broadcast_block",
        "block_name": "shipping_update",
    }
    with new_dag("sql_column_typos") as dag:
        # The case of the report: the ID column misspelt, while a phone column is there.
        sql_transfer(tmp_path, task_id="id_typo", sql=select, user_id_column="pisd", **common)
        sql_transfer(
            tmp_path, task_id="phone_typo", sql=select, user_id_column="psid", phone_column="sdt", **common
        )
        sql_transfer(
            tmp_path,
            task_id="attribute_typo",
            sql=select,
            user_id_column="psid",
            attribute_columns=["tracking"],
            **common,
        )
        sql_transfer(
            tmp_path, task_id="dedupe_typo", sql=select, user_id_column="psid", dedupe_on=["order"], **common
        )
        # No column named: the defaults (user_id, phone) apply, and the error says so.
        sql_transfer(tmp_path, task_id="defaults", sql="SELECT psid, order_id FROM orders", **common)
        # messenger_user_id is not taken as an ID unless named.
        sql_transfer(
            tmp_path,
            task_id="not_named",
            sql="SELECT psid AS messenger_user_id, order_id FROM orders",
            **common,
        )

    result = run_sqlite_dag(dag_runner, dag, sandbox, db, tmp_path)

    assert set(result.task_states.values()) == {"failed"}, result.summary()
    errors = {task_id: outcome.error_text or "" for task_id, outcome in result.tasks.items()}
    listed = "- the query has the columns: psid, phone, order_id, tracking_number"
    assert errors["id_typo"] == (
        "AhaChatValidationError: 2 problems:\n- user_id_column: the query has no column 'pisd'\n" + listed
    )
    assert errors["phone_typo"] == (
        "AhaChatValidationError: 2 problems:\n- phone_column: the query has no column 'sdt'\n" + listed
    )
    assert errors["attribute_typo"] == (
        "AhaChatValidationError: 2 problems:\n- attribute_columns: the query has no column 'tracking'\n"
        + listed
    )
    assert errors["dedupe_typo"] == (
        "AhaChatValidationError: 2 problems:\n- dedupe_on: the query has no column 'order'\n" + listed
    )
    assert errors["defaults"] == (
        "AhaChatValidationError: 2 problems:\n- user_id_column, phone_column: the query has no column "
        "'user_id' or 'phone' to name the "
        "recipients by (the default names, as neither user_id_column nor phone_column was given)\n"
        "- the query has the columns: psid, order_id"
    )
    assert "the query has no column 'user_id' or 'phone'" in errors["not_named"]
    assert_nothing_sent(sandbox)


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_every_column_named_must_be_in_the_file(
    dag_runner: Any, sandbox: SandboxServer, tmp_path: Path, kind: str
) -> None:
    """The same rule for files: their header (a JSON Lines file's first object) is checked first."""
    from airflow_provider_ahachat.operators.ahachat import BroadcastBlockOperator

    ids = sandbox.generate_users(2)
    rows = [{"psid": uid, "order_id": f"DH{n}"} for n, uid in enumerate(ids)]
    no_recipient = tmp_path / f"psid.{kind}"
    with_id = tmp_path / f"ok.{kind}"
    if kind == "csv":
        no_recipient.write_text("psid,order_id\n" + "".join(f"{r['psid']},{r['order_id']}\n" for r in rows))
        with_id.write_text("user_id,order_id\n" + "".join(f"{r['psid']},{r['order_id']}\n" for r in rows))
    else:
        no_recipient.write_text("".join(json.dumps(r) + "\n" for r in rows))
        with_id.write_text(
            "".join(json.dumps({"user_id": r["psid"], "order_id": r["order_id"]}) + "\n" for r in rows)
        )
    common: dict[str, Any] = {"block_name": "shipping_update", "ledger_path": str(tmp_path / "ledger")}
    with new_dag(f"file_columns_{kind}") as dag:
        BroadcastBlockOperator(task_id="no_recipient", recipients=str(no_recipient), **common)
        BroadcastBlockOperator(task_id="dedupe_typo", recipients=str(with_id), dedupe_on="order", **common)

    result = run_sql_dag(dag_runner, dag, sandbox, None, tmp_path)

    assert set(result.task_states.values()) == {"failed"}, result.summary()
    errors = {task_id: outcome.error_text or "" for task_id, outcome in result.tasks.items()}
    assert errors["no_recipient"] == (
        f"AhaChatValidationError: 2 problems:\n- recipients: the file psid.{kind} has no column 'user_id', "
        "'messenger_user_id' or 'phone' to name the recipients by (the default names; a file or a list "
        f"names each recipient by user_id or phone)\n- the file psid.{kind} has the columns: psid, order_id"
    )
    assert errors["dedupe_typo"] == (
        f"AhaChatValidationError: 2 problems:\n- dedupe_on: the file ok.{kind} has no column 'order'\n"
        f"- the file ok.{kind} has the columns: user_id, order_id"
    )
    assert_nothing_sent(sandbox)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"null_attributes": "skip"}, "null_attributes: must be one of invalid, omit, empty, got 'skip'"),
        ({"dedupe_on": [1]}, "dedupe_on: must be a column name or a list of column names, got [1]"),
    ],
)
def test_wrong_choices_fail_when_the_dag_is_parsed(kwargs: dict[str, Any], message: str) -> None:
    from airflow_provider_ahachat.exceptions import AhaChatValidationError
    from airflow_provider_ahachat.operators.ahachat import AddTagsOperator

    with new_dag("choices"):
        with pytest.raises(AhaChatValidationError, match="^" + message.replace("[", r"\[")):
            SqlToAhaChatOperator(
                task_id="t", sql="SELECT 1", sql_conn_id=SHOP, action="add_tags", tags="x", **kwargs
            )
        with pytest.raises(AhaChatValidationError, match="^" + message.replace("[", r"\[")):
            AddTagsOperator(task_id="u", tags="x", recipients=["1"], **kwargs)


# --------------------------------------------------------------------------- NULLs


def test_nulls_are_a_choice(dag_runner: Any, sandbox: SandboxServer, tmp_path: Path) -> None:
    """
    By default a NULL attribute makes its row invalid and nothing reaches that customer, so no block
    shows the value of their previous order; ``omit`` and ``empty`` are asked for. A NULL ID and
    phone is invalid with that reason.
    """
    ids = sandbox.generate_users(7)
    for uid in ids:
        sandbox.update_user(uid, attributes={"tracking_number": "OLD-ORDER"})
    rows = []
    for n, uid in enumerate(ids):
        tracking = None if n % 3 == 0 else f"T{n}"  # rows 1, 4 and 7
        rows.append((None if n == 5 else uid, None, f"DH{n}", tracking))
    db = orders_db(tmp_path / "shop.db", rows)
    common: dict[str, Any] = {
        "action": "broadcast_block",
        "block_name": "shipping_update",
        "user_id_column": "psid",
        "max_failure_ratio": 1,
    }
    select = "SELECT psid, order_id, tracking_number FROM orders WHERE rowid {} ORDER BY rowid"
    with new_dag("sql_nulls") as dag:
        sql_transfer(tmp_path, task_id="invalid", sql=select.format("IN (1, 2, 6)"), **common)
        sql_transfer(
            tmp_path, task_id="omit", sql=select.format("IN (3, 4)"), null_attributes="omit", **common
        )
        sql_transfer(tmp_path, task_id="empty", sql=select.format("= 7"), null_attributes="empty", **common)

    result = run_sqlite_dag(dag_runner, dag, sandbox, db, tmp_path)

    assert result.succeeded, result.summary()
    invalid = result.xcoms["invalid"]
    assert invalid["outcomes"] == {"delivered": 1, "invalid": 2}
    reasons = {line["row"]: line.get("reason") for line in report(invalid)}
    assert reasons[1] == (
        "tracking_number is NULL in row 1: nothing is sent for this row (null_attributes='omit' leaves "
        "such an attribute as it is, 'empty' sends it empty)"
    )
    assert reasons[3] == "psid is NULL in row 3"  # no phone column: no fallback
    assert sandbox.outbox(ids[0]) == []  # nothing reached the customer of the NULL row
    assert sandbox.user(ids[0])["attributes"]["tracking_number"] == "OLD-ORDER"
    assert sandbox.outbox(ids[1])[0]["attributes"]["tracking_number"] == "T1"
    assert sandbox.outbox(ids[5]) == []

    omit = result.xcoms["omit"]
    assert (omit["outcomes"], omit["nulls"]) == ({"delivered": 2}, {"tracking_number": 1})
    assert sandbox.outbox(ids[3])[0]["attributes"] == {"order_id": "DH3"}
    assert sandbox.user(ids[3])["attributes"]["tracking_number"] == "OLD-ORDER"  # as asked

    empty = result.xcoms["empty"]
    assert (empty["outcomes"], empty["nulls"]) == ({"delivered": 1}, {"tracking_number": 1})
    assert sandbox.outbox(ids[6])[0]["attributes"] == {"order_id": "DH6", "tracking_number": ""}
    assert sandbox.user(ids[6])["attributes"]["tracking_number"] == ""
    assert "NULL attributes left out or sent empty: tracking_number in 1 rows" in result.log


def test_a_null_phone_is_named_in_the_reason(dag_runner: Any, sandbox: SandboxServer, tmp_path: Path) -> None:
    ids = sandbox.generate_users(2)
    phone = sandbox.user(ids[0])["phone"]
    db = orders_db(tmp_path / "shop.db", [(None, phone, "DH0", "T0"), (None, None, "DH1", "T1")])
    with new_dag("sql_null_phone") as dag:
        sql_transfer(
            tmp_path,
            task_id="tags",
            sql="SELECT phone, order_id FROM orders ORDER BY rowid",
            action="add_tags",
            tags="da_giao",
        )

    result = run_sqlite_dag(dag_runner, dag, sandbox, db, tmp_path)

    assert result.task_states == {"tags": "failed"}, result.summary()
    assert "phone is NULL in row 2" in (result.tasks["tags"].error_text or "")
    assert sandbox.user(ids[0])["tags"] == ["da_giao"]
    assert sandbox.user(ids[1])["tags"] == []


# --------------------------------------------------------------------------- repeats


def test_repeats_are_counted_and_dedupe_on_sends_one_message_per_order(
    dag_runner: Any, sandbox: SandboxServer, tmp_path: Path
) -> None:
    a, b = sandbox.generate_users(2)
    rows = [(a, None, "DH1", "T1"), (a, None, "DH2", "T2"), (b, None, "DH3", "T3"), (a, None, "DH1", "T1")]
    db = orders_db(tmp_path / "shop.db", rows)
    common: dict[str, Any] = {
        "sql": "SELECT psid, order_id, tracking_number FROM orders ORDER BY rowid",
        "action": "broadcast_block",
        "block_name": "shipping_update",
        "user_id_column": "psid",
    }
    with new_dag("sql_per_customer") as per_customer:
        sql_transfer(tmp_path, task_id="send", **common)
    with new_dag("sql_per_order") as per_order:
        sql_transfer(tmp_path, task_id="send", dedupe_on=["order_id"], **common)

    first = run_sqlite_dag(dag_runner, per_customer, sandbox, db, tmp_path)

    assert first.succeeded, first.summary()
    summary = first.xcoms["send"]
    assert (summary["outcomes"], summary["repeats"]) == ({"delivered": 2, "duplicate": 2}, 2)
    assert sandbox.outbox_counts() == {a: 1, b: 1}
    lines = ahachat_lines(first.log)
    assert any(
        "2 of 4 rows were not sent: they repeat an earlier row's recipient (one message per recipient; "
        "dedupe_on=[columns]" in line
        for line in lines
    )
    assert "2 delivered, 0 failed, 0 invalid, 2 repeats, 0 unknown of 4 rows" in lines[-1]

    second = run_sqlite_dag(dag_runner, per_order, sandbox, db, tmp_path)

    assert second.succeeded, second.summary()
    summary = second.xcoms["send"]
    assert (summary["outcomes"], summary["repeats"]) == ({"delivered": 3, "duplicate": 1}, 1)
    assert sandbox.outbox_counts() == {a: 1 + 2, b: 1 + 1}
    assert sorted(e["attributes"]["order_id"] for e in sandbox.outbox(a)) == ["DH1", "DH1", "DH2"]
    assert report(summary)[3]["reason"] == "the same recipient and order_id came earlier"


def test_dedupe_on_is_exactly_once_per_order_across_tries(sandbox: SandboxServer, tmp_path: Path) -> None:
    """The ledger keys on the recipient and the order: a retry sends only the order that failed."""
    a, b = sandbox.generate_users(2)
    rows = [
        {"user_id": a, "order_id": "DH1"},
        {"user_id": a, "order_id": "DH2"},
        {"user_id": b, "order_id": "DH3"},
        {"user_id": a, "order_id": "DH2"},  # a repeat of the same order
    ]
    columns = Columns.of(dedupe_on=["order_id"])
    with AhaChatClient(sandbox.bot_id, sandbox.token, sandbox.url) as client:

        def attempt() -> dict[str, Any]:
            action = client.bind("broadcast_block", block_name="shipping_update")
            runner = BulkRunner(
                client, action, ledger=Ledger(tmp_path / "ledger"), concurrency=1, columns=columns,
                max_failure_ratio=1, progress_interval=60,
            )  # fmt: skip
            return runner.run(rows, len(rows))

        sandbox.configure(fail_next=[404])  # the first order fails in the first try
        first = attempt()
        second = attempt()

    assert first["outcomes"] == {"delivered": 2, "failed": 1, "duplicate": 1}
    assert second["outcomes"] == {"delivered": 3, "duplicate": 1}
    assert second["delivered_in_earlier_tries"] == 2
    assert sandbox.outbox_counts() == {a: 2, b: 1}
    assert sorted(e["attributes"]["order_id"] for e in sandbox.outbox(a)) == ["DH1", "DH2"]


# --------------------------------------------------------------------------- the log


def test_progress_has_a_total_and_the_log_ends_with_one_summary_line(
    dag_runner: Any, sandbox: SandboxServer, tmp_path: Path
) -> None:
    ids = sandbox.generate_users(3)
    db = orders_db(tmp_path / "shop.db", [(uid, None, f"DH{n}", f"T{n}") for n, uid in enumerate(ids)])
    common: dict[str, Any] = {
        "action": "add_tags",
        "tags": "da_giao",
        "user_id_column": "psid",
    }
    with new_dag("sql_counted") as counted:
        sql_transfer(tmp_path, task_id="send", sql="SELECT psid FROM orders", **common)
    with new_dag("sql_uncounted") as uncounted:
        # A trailing comment swallows the count's closing parenthesis: the count fails, the run goes on.
        sql_transfer(tmp_path, task_id="send", sql="SELECT psid FROM orders -- shipped", **common)

    first = run_sqlite_dag(dag_runner, counted, sandbox, db, tmp_path)

    assert first.succeeded, first.summary()
    lines = ahachat_lines(first.log)
    assert any("the query returns 3 rows (counted in" in line for line in lines)
    assert any("3 / 3 (100.0%) done" in line for line in lines)
    summary = first.xcoms["send"]
    assert (
        lines[-1]
        .split("] ", 1)[1]
        .startswith(
            f"AhaChat add_tags summary: 3 delivered, 0 failed, 0 invalid, 0 repeats, 0 unknown of 3 rows; "
            f"{summary['seconds']:.1f} s, {summary['requests_per_second']:.1f} requests/s; "
            f"report: {summary['report']}"
        )
    )

    second = run_sqlite_dag(dag_runner, uncounted, sandbox, db, tmp_path)

    assert second.succeeded, second.summary()
    lines = ahachat_lines(second.log)
    assert any("the total is unknown: the query's rows could not be counted" in line for line in lines)
    assert any("3 (total unknown) done" in line for line in lines)
    assert "summary: 3 delivered" in lines[-1]


def test_the_ledger_lives_under_airflow_home(
    dag_runner: Any, sandbox: SandboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no ledger_path and no [ahachat] ledger_path, the ledger is under $AIRFLOW_HOME."""
    from airflow_provider_ahachat.operators.ahachat import AddTagsOperator

    home = tmp_path / "home"
    monkeypatch.setenv("AIRFLOW_HOME", str(home))
    monkeypatch.delenv("AIRFLOW__AHACHAT__LEDGER_PATH", raising=False)
    ids = sandbox.generate_users(2)
    with new_dag("ledger_home") as dag:
        AddTagsOperator(task_id="tags", tags="vip", recipients=ids)

    result = run_sql_dag(dag_runner, dag, sandbox, None, tmp_path)

    assert result.succeeded, result.summary()
    summary = result.xcoms["tags"]
    assert Path(summary["report"]).is_relative_to(home / "ahachat" / "ledger"), summary["report"]
    assert Path(summary["report"]).is_file()
    assert "dag_id=ledger_home" in summary["ledger"]
