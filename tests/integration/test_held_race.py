"""
Exactly once across processes: two real processes deliver the same customer's held messages at the
same moment, on SQLite and on PostgreSQL. The control delivers without the store's lock, on the same
harness, and must be caught doubling: the check can fail.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers.held_race import race

TRIALS = 60


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'held.sqlite3'}"
    postgres: Any = request.getfixturevalue("postgres")
    return f"postgresql+psycopg2://postgres@127.0.0.1:{postgres.port}/{postgres.new_database()}"


@pytest.mark.slow
def test_two_processes_at_once_deliver_each_message_exactly_once(url: str) -> None:
    result = race(url, TRIALS, held=4)
    assert result.doubled == 0, result.to_json()
    assert result.lost == 0, result.to_json()
    assert result.out_of_order == 0, result.to_json()
    # The race was run: the two deliveries were in the database at once in most trials.
    assert result.overlapped >= TRIALS // 2, result.to_json()


@pytest.mark.slow
def test_the_check_catches_a_delivery_without_the_lock(url: str) -> None:
    result = race(url, TRIALS, held=4, naive=True)
    assert result.doubled > 0, result.to_json()
    assert result.bad_trials
