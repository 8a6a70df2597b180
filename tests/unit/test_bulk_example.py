"""The bulk example DAG end to end: a shop database, four mapped slices, the sandbox."""

from __future__ import annotations

import datetime
import importlib.util
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_ahachat.sandbox import SandboxServer

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.usefixtures("airflow_db")


def shop_database(path: Path, shipped: list[str], other_day: list[str]) -> None:
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE orders (customer_id INTEGER PRIMARY KEY, messenger_user_id TEXT, order_id TEXT,"
            " tracking_number TEXT, shipped_on TEXT)"
        )
        rows = [(i, uid, f"DH{i:05d}", f"GHN{i:07d}VN", "2026-11-21") for i, uid in enumerate(shipped)]
        rows += [(10_000 + i, uid, "DH-OLD", "GHN-OLD", "2026-11-20") for i, uid in enumerate(other_day)]
        db.executemany("INSERT INTO orders VALUES (?, ?, ?, ?, ?)", rows)


@pytest.mark.slow
def test_the_bulk_example_messages_yesterdays_customers_once_each(
    dag_runner: Any, sandbox: SandboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = sandbox.generate_users(170)
    # One in five who shipped yesterday last wrote 3 days ago: outside Messenger's 24-hour window.
    outside = sandbox.generate_users(40, start=1000, in_window=False)
    inside, other_day = ids[:160], ids[160:]
    shipped = inside + outside  # each slice (customer_id % 4) gets 40 inside and 10 outside
    shop_database(tmp_path / "shop.db", shipped, other_day)
    monkeypatch.setenv("AIRFLOW__AHACHAT__LEDGER_PATH", str(tmp_path / "ledger"))
    # The example's rate (50 requests/s) would pace these 400 requests for 8 s; the sandbox takes more.
    monkeypatch.setenv("AHACHAT_RATE_LIMIT", "1000")

    path = ROOT / "example_dags" / "example_ahachat_bulk_shipping.py"
    spec = importlib.util.spec_from_file_location("example_ahachat_bulk_shipping", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    result = dag_runner(
        module.dag,
        {
            "ahachat_sandbox": sandbox.connection_uri,
            "shop_db": {"conn_type": "sqlite", "host": str(tmp_path / "shop.db")},
        },
        logical_date=datetime.datetime(2026, 11, 22, 1, tzinfo=datetime.timezone.utc),
    )
    assert result.succeeded, result.summary()

    # Every customer inside the window who shipped yesterday got the block once, with their own
    # tracking number; the others were asked once, refused by Messenger, and reported, not failed.
    assert sandbox.outbox_counts() == dict.fromkeys(inside, 1)
    lan_anh = sandbox.user(shipped[123])
    assert lan_anh["attributes"]["tracking_number"] == "GHN0000123VN"
    assert lan_anh["tags"] == ["da_gui_van_don"]
    assert sandbox.user(outside[0])["tags"] == ["da_gui_van_don"]
    assert sandbox.user(other_day[0])["tags"] == []

    # Four slices, each its own task, summary and ledger folder.
    summaries = [result.xcoms[f"shipping_update[{part}]"] for part in range(4)]
    assert [s["outcomes"] for s in summaries] == [{"delivered": 40, "outside_window": 10}] * 4
    named = {row["recipient"] for s in summaries for row in s["outside_window"]}
    assert named == {f"user {uid}" for uid in outside}
    assert len({s["ledger"] for s in summaries}) == 4
    assert all("map_index=" in s["ledger"] and str(tmp_path / "ledger") in s["ledger"] for s in summaries)
    assert sum(result.xcoms[f"tag_shipped[{part}]"]["outcomes"]["delivered"] for part in range(4)) == 200
    result.assert_not_in_log(sandbox.token)
