"""
The webhook's duplicate look-up on a table shaped as Airflow's ``asset_event``: each release's
declaration of ``AssetEvent.extra``, keys as the webhook records them and neighbours that must not
match. Run on SQLite (unit tier) and on PostgreSQL (integration tier).
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
import sqlalchemy_jsonfield

from airflow_provider_ahachat.inbound.airflow_internals import holds_key, may_hold_key

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


def assert_the_look_up_finds_each_key(engine: sa.engine.Engine, column_type: Any) -> None:
    """
    ``may_hold_key`` in SQL, then ``holds_key`` on each candidate, find each key and no neighbour;
    on SQLite a row stored with ``NaN`` is skipped, not an error.
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
