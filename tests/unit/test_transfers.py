"""SqlToAhaChatOperator inside Airflow (``dag.test()``): a SQLite file's rows to the sandbox."""

from __future__ import annotations

import datetime
import decimal
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from helpers.dag_helpers import (
    CONN,
    SHOP,
    assert_nothing_sent,
    new_dag,
    report,
    run_sqlite_dag,
    shop_db,
    sql_transfer,
)

from airflow_provider_ahachat.sandbox import SandboxServer
from airflow_provider_ahachat.transfers.sql_to_ahachat import SqlToAhaChatOperator

pytestmark = pytest.mark.usefixtures("airflow_db")


Shop = Callable[[Iterable[tuple[Any, ...]]], Path]


@pytest.fixture
def shop(tmp_path: Path) -> Shop:
    """Writes a shop database of these ``orders`` (see :func:`shop_db`) in the test's folder."""
    return lambda orders: shop_db(tmp_path / "shop.db", orders)


RunTransfer = Callable[..., Any]


@pytest.fixture
def run_transfer(dag_runner: Any, sandbox: SandboxServer, tmp_path: Path) -> RunTransfer:
    """Runs a DAG of one :func:`sql_transfer` task reading a database file, as :func:`run_sqlite_dag` does.

    Its arguments: the database file, the DAG's ID, ``dag_kwargs`` (more arguments of the DAG,
    e.g. ``template_searchpath``), ``run_kwargs`` (more arguments of the run, e.g. ``logical_date``)
    and the task's own arguments.
    """

    def _run(
        db: Path,
        dag_id: str,
        *,
        dag_kwargs: dict[str, Any] | None = None,
        run_kwargs: dict[str, Any] | None = None,
        **transfer: Any,
    ) -> Any:
        with new_dag(dag_id, **(dag_kwargs or {})) as dag:
            sql_transfer(tmp_path, **transfer)
        return run_sqlite_dag(dag_runner, dag, sandbox, db, tmp_path, **(run_kwargs or {}))

    return _run


def test_broadcast_with_attribute_columns_as_a_list_and_a_mapping(
    dag_runner: Any, sandbox: SandboxServer, shop: Shop, tmp_path: Path
) -> None:
    ids = sandbox.generate_users(6)
    db = shop(
        [(uid, None, f"DH{n}", f"GHN{n}", f"Khách {n}", "2026-11-11", None) for n, uid in enumerate(ids)],
    )
    common: dict[str, Any] = {
        "action": "broadcast_block",
        "block_name": "shipping_update",
    }
    with new_dag("sql_broadcast") as dag:
        sql_transfer(
            tmp_path,
            task_id="as_list",
            sql="SELECT user_id, ma_don AS order_id, ma_van_don AS tracking_number, ten FROM orders "
            "WHERE rowid <= 3",
            attribute_columns=["order_id", "tracking_number"],
            **common,
        )
        sql_transfer(
            tmp_path,
            task_id="as_mapping",
            sql="SELECT user_id, ma_don, ma_van_don, ten FROM orders WHERE rowid > 3",
            attribute_columns={"ma_don": "order_id", "ma_van_don": "tracking_number"},
            **common,
        )

    result = run_sqlite_dag(dag_runner, dag, sandbox, db, tmp_path)

    assert result.succeeded, result.summary()
    for task_id in ("as_list", "as_mapping"):
        summary = result.xcoms[task_id]
        assert summary["action"] == "broadcast_block"
        assert (summary["total"], summary["outcomes"]) == (3, {"delivered": 3}), summary
    assert sandbox.outbox_counts() == dict.fromkeys(ids, 1)
    for n, uid in enumerate(ids):
        (entry,) = sandbox.outbox(uid)
        # Only the chosen columns are attributes: ``ten`` is not sent.
        assert entry["attributes"] == {"order_id": f"DH{n}", "tracking_number": f"GHN{n}"}
        assert entry["message_tag"] is None
        assert entry["text"] == f"Đơn hàng DH{n} đã được giao cho đơn vị vận chuyển, mã vận đơn GHN{n}."
        assert sandbox.user(uid)["attributes"] == entry["attributes"]


def test_add_tags_by_phone_with_templated_parameters(
    run_transfer: RunTransfer, sandbox: SandboxServer, shop: Shop
) -> None:
    ids = sandbox.generate_users(6)
    phones = [sandbox.user(uid)["phone"] for uid in ids]
    # Phones as customers type them; three shipped on the run's day, three the day before.
    typed = [f"0{p[3:6]} {p[6:9]} {p[9:]}" for p in phones]
    days = ["2026-11-11", "2026-11-10"] * 3
    db = shop(
        [(None, typed[n], f"DH{n}", None, None, days[n], None) for n in range(6)],
    )
    day = datetime.datetime(2026, 11, 11, tzinfo=datetime.timezone.utc)
    result = run_transfer(
        db,
        "sql_tags_by_phone",
        run_kwargs={"logical_date": day},
        task_id="tags",
        sql="SELECT phone AS sdt FROM orders WHERE shipped_on = :day AND ma_don != :skip",
        parameters={"day": "{{ ds }}", "skip": "{{ params.skip }}"},
        params={"skip": "DH4"},
        phone_column="sdt",
        action="add_tags",
        tags=["da_giao_{{ ds_nodash }}"],
    )

    assert result.succeeded, result.summary()
    summary = result.xcoms["tags"]
    assert (summary["total"], summary["outcomes"]) == (2, {"delivered": 2}), summary
    tagged = {uid: sandbox.user(uid)["tags"] for uid in ids}
    assert tagged == {uid: (["da_giao_20261111"] if n in (0, 2) else []) for n, uid in enumerate(ids)}
    # Found by phone first (add_tags needs the user ID), then tagged: two requests each.
    assert sandbox.stats()["total"] == 4
    assert [line["recipient"] for line in report(summary)] == [
        f"phone {phones[0]}",  # in E.164, however it was typed
        f"phone {phones[2]}",
    ]


@pytest.mark.slow
def test_more_rows_than_fetch_size_each_reached_once(
    run_transfer: RunTransfer, sandbox: SandboxServer, shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.providers.sqlite.hooks.sqlite import SqliteHook

    ids = sandbox.generate_users(750)
    db = shop([(uid, None, f"DH{n}", "X", None, None, None) for n, uid in enumerate(ids)])
    fetched: list[int] = []

    class CountingCursor(sqlite3.Cursor):
        def fetchmany(self, size: int | None = 1) -> list[Any]:
            rows = super().fetchmany(size)
            fetched.append(len(rows))
            return rows

    class CountingConnection(sqlite3.Connection):
        def cursor(self, factory: Any = CountingCursor) -> Any:
            return super().cursor(factory)

    monkeypatch.setattr(SqliteHook, "get_conn", lambda self: sqlite3.connect(db, factory=CountingConnection))
    result = run_transfer(
        db,
        "sql_fetch_size",
        task_id="broadcast",
        sql="SELECT user_id, ma_don AS order_id, ma_van_don AS tracking_number FROM orders",
        action="broadcast_block",
        block_name="shipping_update",
        fetch_size=100,
        rate_limit=0,
    )

    assert result.succeeded, result.summary()
    summary = result.xcoms["broadcast"]
    assert (summary["total"], summary["outcomes"]) == (750, {"delivered": 750})
    assert sandbox.outbox_counts() == dict.fromkeys(ids, 1)
    assert fetched == [100] * 7 + [50, 0]  # a short last batch, then the end
    assert sandbox.outbox(ids[567])[0]["attributes"]["order_id"] == "DH567"


def test_decimal_date_and_null_values(
    run_transfer: RunTransfer, sandbox: SandboxServer, shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.providers.sqlite.hooks.sqlite import SqliteHook

    ids = sandbox.generate_users(3)
    sandbox.update_user(ids[2], attributes={"total": "kept"})
    db = shop(
        [
            (ids[0], None, "DH0", None, "Lan", "2026-11-11", "199000"),
            (ids[1], None, "DH1", None, None, "2026-11-12", "12.5"),
            (ids[2], None, "DH2", None, None, None, None),
        ],
    )
    # Typed columns, as a database with DECIMAL and DATE types returns them.
    sqlite3.register_converter("DECIMAL", lambda raw: decimal.Decimal(raw.decode()))
    sqlite3.register_converter("DAY", lambda raw: datetime.date.fromisoformat(raw.decode()))
    monkeypatch.setattr(
        SqliteHook, "get_conn", lambda self: sqlite3.connect(db, detect_types=sqlite3.PARSE_DECLTYPES)
    )
    result = run_transfer(
        db,
        "sql_types",
        task_id="attrs",
        sql="SELECT user_id, ma_van_don, ten, shipped_on, total FROM orders",
        action="add_attributes",
        attributes={"nguon": "sql"},
        null_attributes="omit",
    )

    assert result.succeeded, result.summary()
    assert result.xcoms["attrs"]["outcomes"] == {"delivered": 3}
    assert sandbox.user(ids[0])["attributes"] == {
        "nguon": "sql",
        "ten": "Lan",
        "shipped_on": "11/11/2026",  # a DATE, as AhaChat writes dates
        "total": 199000,
    }
    assert sandbox.user(ids[1])["attributes"] == {"nguon": "sql", "shipped_on": "12/11/2026", "total": 12.5}
    # With null_attributes="omit", NULL leaves an attribute as it was: it is not sent at all.
    assert sandbox.user(ids[2])["attributes"] == {"nguon": "sql", "total": "kept"}


def test_dry_run_sends_nothing(run_transfer: RunTransfer, sandbox: SandboxServer, shop: Shop) -> None:
    ids = sandbox.generate_users(4)
    db = shop([(uid, None, f"DH{n}", "X", None, None, None) for n, uid in enumerate(ids)])
    result = run_transfer(
        db,
        "sql_dry_run",
        task_id="text",
        sql="SELECT user_id FROM orders",
        action="send_text",
        text="Đơn hàng của bạn đã được giao",
        dry_run=True,
    )

    assert result.succeeded, result.summary()
    summary = result.xcoms["text"]
    assert summary["dry_run"] is True
    assert (summary["would_send"], summary["outcomes"]) == (4, {"would_send": 4})
    assert summary["sample_requests"][0] == {
        "row": 1,
        "request": f"POST /api/bots/{sandbox.bot_id}/users/{ids[0]}/messages",
        "json": {"messages": [{"text": "Đơn hàng của bạn đã được giao"}]},
    }
    assert len(report(summary)) == 4
    assert_nothing_sent(sandbox)


def test_bad_queries_and_connections_fail_before_anything_is_sent(
    dag_runner: Any, sandbox: SandboxServer, shop: Shop, tmp_path: Path
) -> None:
    ids = sandbox.generate_users(2)
    db = shop([(uid, None, f"DH{n}", "X", None, None, None) for n, uid in enumerate(ids)])
    common: dict[str, Any] = {"action": "add_tags", "tags": "x", "ledger_path": str(tmp_path / "ledger")}
    with new_dag("sql_bad") as dag:
        SqlToAhaChatOperator(
            task_id="no_id_column", sql="SELECT ma_don, ten FROM orders", sql_conn_id=SHOP, **common
        )
        sql_transfer(
            tmp_path,
            task_id="no_attribute_column",
            sql="SELECT user_id, ma_don FROM orders",
            action="add_attributes",
            attribute_columns=["ma_don", "ma_van_don"],
        )
        SqlToAhaChatOperator(task_id="not_sql", sql="SELECT 1", sql_conn_id=CONN, **common)
        SqlToAhaChatOperator(task_id="bad_sql", sql="SELECT user_id FROM nowhere", sql_conn_id=SHOP, **common)

    result = run_sqlite_dag(dag_runner, dag, sandbox, db, tmp_path)

    assert set(result.task_states.values()) == {"failed"}, result.summary()
    errors = {task_id: outcome.error_text or "" for task_id, outcome in result.tasks.items()}
    assert errors["no_id_column"] == (
        "AhaChatValidationError: 2 problems:\n- user_id_column, phone_column: the query has no column "
        "'user_id' or 'phone' to name the recipients by (the default names, as neither user_id_column "
        "nor phone_column was given)\n- the query has the columns: ma_don, ten"
    )
    assert errors["no_attribute_column"] == (
        "AhaChatValidationError: 2 problems:\n- attribute_columns: the query has no column 'ma_van_don'\n"
        "- the query has the columns: user_id, ma_don"
    )
    assert errors["not_sql"] == (
        f"AhaChatValidationError: sql_conn_id: connection {CONN!r} is not a SQL database "
        "(its hook is AhaChatHook, not a DbApiHook)"
    )
    assert "no such table: nowhere" in errors["bad_sql"]
    assert sandbox.stats()["total"] == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"action": "send_sms"}, "action: must be one of broadcast_block, add_tags"),
        ({"action": "add_tags", "tags": "x", "text": "hi"}, "text: not used by the action 'add_tags'"),
        (
            {"action": "send_text", "text": "hi", "block_name": "welcome", "tags": "x"},
            "block_name, tags: not used by the action 'send_text'",
        ),
        ({"action": "add_tags", "tags": "x", "fetch_size": 0}, "fetch_size: must be a whole number above 0"),
        ({"action": "add_tags", "tags": "x", "user_id": "1234"}, "user_id, recipients: the query's rows"),
        ({"action": "add_tags", "tags": "x", "recipients": ["1"]}, "user_id, recipients: the query's rows"),
    ],
)
def test_wrong_arguments_fail_when_the_dag_is_parsed(kwargs: dict[str, Any], message: str) -> None:
    from airflow_provider_ahachat.exceptions import AhaChatValidationError

    with new_dag("sql_parse"), pytest.raises(AhaChatValidationError, match="^" + message):
        SqlToAhaChatOperator(task_id="t", sql="SELECT 1", sql_conn_id=SHOP, **kwargs)


def test_rows_with_both_a_user_id_and_a_phone_use_the_user_id(
    run_transfer: RunTransfer, sandbox: SandboxServer, shop: Shop
) -> None:
    """``phone_column`` is for rows without a user ID: a customer with both is reached by ID, once."""
    ids = sandbox.generate_users(4)
    phones = [sandbox.user(uid)["phone"] for uid in ids]
    db = shop(
        [
            (ids[0], phones[0], "DH0", "T0", None, None, None),  # both
            (ids[1], None, "DH1", "T1", None, None, None),  # the ID only
            (None, phones[2], "DH2", "T2", None, None, None),  # the phone only
            ("", phones[3], "DH3", "T3", None, None, None),  # an empty ID: the phone
        ],
    )
    result = run_transfer(
        db,
        "sql_id_and_phone",
        task_id="broadcast",
        sql="SELECT user_id, phone, ma_don AS order_id, ma_van_don AS tracking_number FROM orders",
        action="broadcast_block",
        block_name="shipping_update",
    )

    assert result.succeeded, result.summary()
    assert result.xcoms["broadcast"]["outcomes"] == {"delivered": 4}
    assert sandbox.outbox_counts() == dict.fromkeys(ids, 1)
    assert [line["recipient"] for line in report(result.xcoms["broadcast"])] == [
        f"user {ids[0]}",
        f"user {ids[1]}",
        f"phone {phones[2]}",
        f"phone {phones[3]}",
    ]
    for n, uid in enumerate(ids):
        assert sandbox.outbox(uid)[0]["attributes"] == {"order_id": f"DH{n}", "tracking_number": f"T{n}"}


def test_sql_from_a_templated_file_with_positional_parameters(
    dag_runner: Any, sandbox: SandboxServer, shop: Shop, tmp_path: Path
) -> None:
    ids = sandbox.generate_users(4)
    db = shop(
        [
            (uid, None, f"DH{n}", None, None, ["2026-11-11", "2026-11-12"][n % 2], None)
            for n, uid in enumerate(ids)
        ],
    )
    (tmp_path / "shipped.sql").write_text(
        "SELECT user_id FROM orders WHERE shipped_on = '{{ ds }}' AND ma_don != ?", encoding="utf-8"
    )
    with new_dag("sql_file", template_searchpath=[str(tmp_path)]) as dag:
        sql_transfer(
            tmp_path,
            task_id="tags",
            sql="shipped.sql",
            parameters=["{{ params.skip }}"],
            params={"skip": "DH2"},
            action="remove_tags",
            tags="cho_giao_hang",
        )
    for uid in ids:
        sandbox.update_user(uid, add_tags=["cho_giao_hang", "vip"])

    day = datetime.datetime(2026, 11, 11, tzinfo=datetime.timezone.utc)
    result = run_sqlite_dag(dag_runner, dag, sandbox, db, tmp_path, logical_date=day)

    assert result.succeeded, result.summary()
    assert result.xcoms["tags"]["outcomes"] == {"delivered": 1}
    assert {uid: sandbox.user(uid)["tags"] for uid in ids} == {
        ids[0]: ["vip"],
        ids[1]: ["cho_giao_hang", "vip"],
        ids[2]: ["cho_giao_hang", "vip"],
        ids[3]: ["cho_giao_hang", "vip"],
    }


def test_a_delivery_mark_rides_on_every_message_of_the_transfer(
    run_transfer: RunTransfer, sandbox: SandboxServer, shop: Shop
) -> None:
    from airflow_provider_ahachat.bulk import Ledger

    ids = sandbox.generate_users(3)
    db = shop([(uid, None, f"DH{n}", None, None, None, None) for n, uid in enumerate(ids)])
    result = run_transfer(
        db,
        "sql_marked",
        task_id="send",
        sql="SELECT user_id, ma_don AS order_id FROM orders",
        action="broadcast_block",
        block_name="shipping_update",
        delivery_mark="da_gui",
    )
    assert result.succeeded, result.summary()
    ledger = Ledger(result.xcoms["send"]["ledger"])
    for uid in ids:  # what a retry of this task instance would look for
        assert sandbox.user(uid)["attributes"]["da_gui"] == ledger.mark(f"user:{uid}")
