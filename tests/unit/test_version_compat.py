"""
The differences between Airflow releases that ``airflow_provider_ahachat.version_compat`` covers,
checked on the databases Airflow runs on, whatever Airflow release is installed.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from helpers.asset_extra import COLUMN_TYPES, assert_the_look_up_finds_each_key

from airflow_provider_ahachat import version_compat
from airflow_provider_ahachat.version_compat import hitl_arguments, hitl_response_timeout


@pytest.mark.parametrize("column_type", list(COLUMN_TYPES.values()), ids=list(COLUMN_TYPES))
def test_the_idempotency_look_up_finds_a_key_on_every_releases_column_type(
    tmp_path: Path, column_type: Any
) -> None:
    """
    The webhook's duplicate look-up on each release's declaration of ``AssetEvent.extra``, on
    SQLite (on PostgreSQL: ``tests/integration/test_idempotency_postgres.py``); a row another writer
    stored with ``NaN`` (text no JSON function takes) is skipped, not an error.
    """
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'metadata.db'}")
    try:
        assert_the_look_up_finds_each_key(engine, column_type)
    finally:
        engine.dispose()


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
