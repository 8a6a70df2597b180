"""
The held messages benchmark still runs: its smallest mode, in a child process, as a user runs it.

The times are not checked (they depend on the machine), only that every scenario ran, every held
message was carried, the store delivered none twice and lost none, and the control was caught; the
same through ``airflow api-server --workers 2``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.benchmark_runner import run_benchmark


@pytest.mark.airflow_processes
@pytest.mark.timeout(1200)
def test_held_delivery_quick(tmp_path: Path) -> None:
    figures = tmp_path / "held.json"
    done = run_benchmark(
        "held_delivery.py", "--quick", "--database", "sqlite", "--json", str(figures), timeout=900
    )
    [store] = json.loads(figures.read_text())["store"]
    assert store["database"] == "SQLite"
    assert [row["held"] for row in store["latency"]] == [0, 1, 20]
    for row in store["latency"]:
        assert row["messages_carried"] == row["messages_expected"] == row["held"] * row["samples"]
        assert 0 < row["p50_ms"] <= row["p99_ms"]
    assert store["race"]["trials"] == 20
    assert store["race"]["doubled"] == store["race"]["lost"] == 0
    assert store["race_control"]["doubled"] > 0
    assert "20 held" in done.stdout
    # Through airflow api-server --workers 2: every held message carried, none twice, none lost.
    figures_json = json.loads(figures.read_text())
    assert [row["held"] for row in figures_json["api_latency"]] == [0, 1, 20]
    for row in figures_json["api_latency"]:
        assert row["messages_carried"] == row["messages_expected"] == row["held"] * row["samples"]
    race = figures_json["api_race"]
    assert race["trials"] == 20 and race["doubled"] == race["lost"] == race["out_of_order"] == 0
