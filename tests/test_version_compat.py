"""
The differences between Airflow releases that ``airflow_provider_ahachat.version_compat`` covers,
checked on the databases Airflow runs on, whatever Airflow release is installed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
import sqlalchemy_jsonfield

from airflow_provider_ahachat import version_compat
from airflow_provider_ahachat.inbound.airflow_internals import holds_key, may_hold_key
from airflow_provider_ahachat.version_compat import hitl_arguments, hitl_response_timeout

pytest_plugins = ["postgres_fixtures"]

#: How each Airflow release declares ``AssetEvent.extra``.
COLUMN_TYPES = {
    "airflow-3.1": sqlalchemy_jsonfield.JSONField(json=json),
    "airflow-3.2+": sa.JSON(),
}

#: Keys as the webhook records them, and neighbours that must not match them.
EXTRAS = [
    {"idempotency_key": "k-1", "messenger_user_id": "1"},
    {"idempotency_key": "k-10", "messenger_user_id": "2"},
    {"idempotency_key": 'quote " and \\ backslash', "messenger_user_id": "3"},
    {"idempotency_key": "đơn hàng 🛒", "messenger_user_id": "4"},
    {"messenger_user_id": "5", "fields": {"idempotency_key": "k-1"}},
    {"messenger_user_id": "6"},
    {},
]


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.engine.Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'metadata.db'}"
    else:
        cluster = request.getfixturevalue("postgres")
        url = f"postgresql+psycopg2://postgres@127.0.0.1:{cluster.port}/{cluster.new_database()}"
    engine = sa.create_engine(url)
    yield engine
    engine.dispose()


@pytest.mark.parametrize("column_type", list(COLUMN_TYPES.values()), ids=list(COLUMN_TYPES))
def test_the_idempotency_look_up_finds_a_key_on_every_releases_column_type(
    engine: Any, column_type: Any
) -> None:
    """
    The webhook's duplicate look-up (``may_hold_key`` in SQL, then ``holds_key`` on each candidate)
    on each release's declaration of ``AssetEvent.extra``, on SQLite and PostgreSQL; on SQLite a row
    another writer stored with ``NaN`` (text no JSON function takes) is skipped, not an error.
    """
    table = sa.Table(
        "asset_event",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("extra", column_type, nullable=False, default={}),
    )
    table.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(table.insert(), [{"id": n, "extra": extra} for n, extra in enumerate(EXTRAS, 1)])
        if engine.dialect.name == "sqlite":
            conn.execute(
                sa.text('INSERT INTO asset_event VALUES (99, \'{"idempotency_key": "k-nan", "n": NaN}\')')
            )

    def found(key: str) -> list[int]:
        text = sa.cast(table.c.extra, sa.Text)
        with engine.connect() as conn:
            rows = conn.execute(sa.select(table.c.id, text).where(may_hold_key(table.c.extra, key)))
            return sorted(row_id for row_id, stored in rows if holds_key(stored, key))

    assert found("k-1") == [1]
    assert found("k-10") == [2]
    assert found('quote " and \\ backslash') == [3]
    assert found("đơn hàng 🛒") == [4]
    assert found("k-") == []
    assert found("") == []
    assert found("k-nan") == ([99] if engine.dialect.name == "sqlite" else [])


@pytest.mark.parametrize("takes", [True, False], ids=["standard-1.13+", "standard-1.12"])
def test_a_response_timeout_reaches_every_standard_providers_hitl_operator(
    monkeypatch: pytest.MonkeyPatch, takes: bool
) -> None:
    monkeypatch.setattr(version_compat, "hitl_takes_response_timeout", lambda: takes)
    hour = timedelta(hours=1)
    given = {"subject": "Hoàn tiền?", "response_timeout": hour, "retries": 2}
    if takes:
        assert hitl_arguments(given) is given
    else:
        assert hitl_arguments(given) == {"subject": "Hoàn tiền?", "execution_timeout": hour, "retries": 2}
        assert hitl_arguments({"response_timeout": None}) == {}
        with pytest.raises(ValueError, match="response_timeout, execution_timeout: give one"):
            hitl_arguments({"response_timeout": hour, "execution_timeout": hour})
    assert hitl_arguments({"subject": "x"}) == {"subject": "x"}
    task = SimpleNamespace(response_timeout=None, execution_timeout=hour)
    assert hitl_response_timeout(task) == (None if takes else hour)
    assert hitl_response_timeout(SimpleNamespace(response_timeout=hour, execution_timeout=None)) == hour


def test_the_installed_hitl_operator_takes_the_timeout_it_is_given(airflow_db: Any) -> None:
    from airflow.sdk import DAG

    from airflow_provider_ahachat.operators.hitl import AhaChatApprovalOperator

    with DAG("t_compat_timeout", schedule=None):
        task = AhaChatApprovalOperator(
            task_id="ask", subject="Hoàn tiền?", approvers="1", response_timeout=timedelta(hours=4)
        )
    assert hitl_response_timeout(task) == timedelta(hours=4)
