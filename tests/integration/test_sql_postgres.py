"""
The SQL transfer on a real PostgreSQL cluster (Debian's, started by the ``postgres`` fixture on
loopback): exact numbers and types, named parameters. The same rules on SQLite files are in
``tests/unit/test_sql_data.py``.
"""

from __future__ import annotations

import datetime
import decimal
from pathlib import Path
from typing import Any

import pytest
from helpers.dag_helpers import ahachat_lines, new_dag, run_sql_dag, sql_transfer

from airflow_provider_ahachat.sandbox import SandboxServer

pytestmark = pytest.mark.usefixtures("airflow_db")


def test_postgres_types_are_sent_exactly(
    dag_runner: Any, sandbox: SandboxServer, tmp_path: Path, postgres: Any
) -> None:
    """NUMERIC beyond a float's precision, BIGINT, DATE, TIMESTAMP, BOOLEAN and NULL, as sent."""

    ids = sandbox.generate_users(2)
    database = postgres.new_database_with(
        "CREATE TABLE customers (psid TEXT, total NUMERIC(38, 10), price NUMERIC(10, 2), points BIGINT,"
        " born DATE, seen TIMESTAMP, vip BOOLEAN, note TEXT)",
        "INSERT INTO customers VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        [
                (ids[0], decimal.Decimal("12345678901234567.8912345678"), decimal.Decimal("19.90"),
                 9007199254740993, datetime.date(1990, 2, 28), datetime.datetime(2026, 11, 11, 8, 30, 5),
                 True, None),
                (ids[1], decimal.Decimal("0.1000000000"), decimal.Decimal("199000.00"),
                 -5, None, None, False, "hi"),
        ],
    )  # fmt: skip
    select = "SELECT psid, total, price, points, born, seen, vip, note FROM customers ORDER BY psid"
    with new_dag("pg_types") as dag:
        sql_transfer(
            tmp_path,
            task_id="attrs",
            sql=select,
            action="add_attributes",
            user_id_column="psid",
            null_attributes="omit",
        )

    result = run_sql_dag(dag_runner, dag, sandbox, postgres.uri(database), tmp_path)

    assert result.succeeded, result.summary()
    assert result.xcoms["attrs"]["nulls"] == {"note": 1, "born": 1, "seen": 1}
    first, second = (sandbox.user(uid)["attributes"] for uid in sorted(ids))
    by_id = dict(zip(sorted(ids), (first, second), strict=True))
    assert by_id[ids[0]] == {
        "total": "12345678901234567.8912345678",  # beyond a float: its exact text
        "price": 19.9,
        "points": 9007199254740993,  # beyond a float's integers, still exact
        "born": "28/02/1990",
        "seen": "11/11/2026 08:30:05",
        "vip": "yes",
    }
    assert by_id[ids[1]] == {"total": 0.1, "price": 199000, "points": -5, "vip": "no", "note": "hi"}


def test_postgres_broadcast_with_named_parameters(
    dag_runner: Any, sandbox: SandboxServer, tmp_path: Path, postgres: Any
) -> None:
    """A %(name)s query, counted for the progress total; NUMERIC in the Broadcast API's query string."""

    ids = sandbox.generate_users(4)
    amount = decimal.Decimal("9999999999999999.12345678")
    database = postgres.new_database_with(
        "CREATE TABLE orders (messenger_user_id TEXT, order_id TEXT, amount NUMERIC(30, 8), shipped_on DATE)",
        "INSERT INTO orders VALUES (%s, %s, %s, %s)",
        [(uid, f"DH{n}", amount, ["2026-11-10", "2026-11-11"][n % 2]) for n, uid in enumerate(ids)],
    )
    with new_dag("pg_params") as dag:
        sql_transfer(
            tmp_path,
            task_id="send",
            sql="SELECT messenger_user_id, order_id, amount FROM orders "
            "WHERE shipped_on = %(day)s AND order_id <> %(skip)s",
            parameters={"day": "{{ params.day }}", "skip": "DH3"},
            params={"day": "2026-11-11"},
            user_id_column="messenger_user_id",
            action="broadcast_block",
            block_name="shipping_update",
        )

    result = run_sql_dag(dag_runner, dag, sandbox, postgres.uri(database), tmp_path)

    assert result.succeeded, result.summary()
    assert result.xcoms["send"]["outcomes"] == {"delivered": 1}
    assert sandbox.outbox_counts() == {ids[1]: 1}
    (entry,) = sandbox.outbox(ids[1])
    assert entry["attributes"] == {"order_id": "DH1", "amount": "9999999999999999.12345678"}
    lines = ahachat_lines(result.log)
    assert any("the query returns 1 rows (counted in" in line for line in lines)
    assert any("1 / 1 (100.0%) done" in line for line in lines)
