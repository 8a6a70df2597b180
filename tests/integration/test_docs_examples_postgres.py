"""
The docs' mapped SQL example (``docs/examples/howto_sql_mapped.py``) run with ``dag.test()`` on a real
PostgreSQL database shaped as it expects (Debian's, started by the ``postgres`` fixture on loopback).
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest
from helpers.paths import load_example

from airflow_provider_ahachat.sandbox import SandboxServer


@pytest.mark.slow
@pytest.mark.usefixtures("airflow_db")
def test_the_mapped_example_runs_on_postgres(
    dag_runner: Any,
    sandbox: SandboxServer,
    postgres: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Eight slices of a PostgreSQL query, each customer messaged once."""
    from airflow.models.pool import Pool

    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))  # the ledger, by default under it
    Pool.create_or_update_pool("ahachat", 4, "for the docs' example", include_deferred=False)
    ids = sandbox.generate_users(20)
    database = postgres.new_database_with(
        "CREATE TABLE orders (customer_id INTEGER, messenger_user_id TEXT, tracking_number TEXT, "
        "shipped_on DATE)",
        "INSERT INTO orders VALUES (%s, %s, %s, %s)",
        [(n, uid, f"GHN{n}", "2026-11-11" if n < 16 else "2026-11-10") for n, uid in enumerate(ids)],
    )
    dag = load_example("howto_sql_mapped")["dag"]

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
