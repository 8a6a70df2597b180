"""
The bulk benchmarks still run: each script's smallest mode, in a child process, as a user runs it.

The figures themselves are not checked (they depend on the machine), only that every scenario ran
and that the provider lost and doubled nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.benchmark_runner import run_benchmark


@pytest.mark.slow
def test_bulk_throughput_quick(tmp_path: Path) -> None:
    figures = tmp_path / "throughput.json"
    done = run_benchmark("bulk_throughput.py", "--quick", "--json", str(figures))
    assert "messages/s" in done.stdout
    document = json.loads(figures.read_text())
    assert document["rate_limit"] == 200
    assert document["latency_ms"] == 50
    by_scenario = {f["scenario"]: f for f in document["figures"]}
    assert set(by_scenario) == {"naive requests.post loop", "provider engine, 300 recipients"}
    provider = by_scenario["provider engine, 300 recipients"]
    assert provider["delivered"] == provider["recipients"] == 300
    assert provider["lost"] == 0
    assert provider["doubled"] == 0
    assert provider["messages_per_second"] > 0
    assert by_scenario["naive requests.post loop"]["delivered"] == 20


@pytest.mark.slow
def test_bulk_memory_small(tmp_path: Path) -> None:
    figures = tmp_path / "memory.json"
    done = run_benchmark("bulk_memory.py", "--sizes", "300", "--send-sizes", "200", "--json", str(figures))
    assert "peak RSS" in done.stdout
    document = json.loads(figures.read_text())
    rows = {(f["rows"], f["mode"]): f for f in document["figures"]}
    assert set(rows) == {(300, "dry run"), (200, "sent")}
    assert rows[300, "dry run"]["outcomes"] == {"would_send": 300}
    assert rows[200, "sent"]["outcomes"] == {"delivered": 200}
    assert rows[200, "sent"]["lost"] == rows[200, "sent"]["doubled"] == 0
    assert all(f["peak_kib"] > 0 for f in document["figures"])
