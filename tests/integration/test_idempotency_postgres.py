"""
The webhook's duplicate look-up on a real PostgreSQL database (Debian's, started by the ``postgres``
fixture on loopback), on each Airflow release's declaration of ``AssetEvent.extra``. The same on
SQLite: ``tests/unit/test_version_compat.py``.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from helpers.asset_extra import COLUMN_TYPES, assert_the_look_up_finds_each_key


@pytest.mark.parametrize("column_type", list(COLUMN_TYPES.values()), ids=list(COLUMN_TYPES))
def test_the_idempotency_look_up_finds_a_key_on_every_releases_column_type_on_postgres(
    postgres: Any, column_type: Any
) -> None:
    engine = sa.create_engine(
        f"postgresql+psycopg2://postgres@127.0.0.1:{postgres.port}/{postgres.new_database()}"
    )
    try:
        assert_the_look_up_finds_each_key(engine, column_type)
    finally:
        engine.dispose()
