"""
Every recipient's state during a run, in a temporary SQLite file, so that memory stays flat however
large the audience. No Airflow import here.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from typing import Any

from airflow_provider_ahachat.bulk.report import OUTCOMES, UNKNOWN


class RunIndex:
    """
    The earlier tries' outcomes (``before``) and this run's rows (``now``), by recipient key.

    Writes are batched, a few thousand to a transaction.
    """

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="ahachat-bulk-")
        self.db = sqlite3.connect(f"{self._dir.name}/index.sqlite", isolation_level=None)
        self.db.executescript(
            """
            PRAGMA journal_mode = OFF;
            PRAGMA synchronous = OFF;
            CREATE TABLE before (k TEXT PRIMARY KEY, o TEXT NOT NULL, r TEXT);
            CREATE TABLE now (n INTEGER PRIMARY KEY, k TEXT, who TEXT, o TEXT, r TEXT, earlier INTEGER);
            CREATE INDEX now_k ON now (k);
            """
        )
        self.db.execute("BEGIN")
        self._pending = 0

    def load(self, records: Iterable[dict[str, Any]]) -> None:
        """Fold the earlier tries' journal records into the ``before`` table."""
        for record in records:
            if "c" in record:
                self.db.executemany(
                    "INSERT INTO before VALUES (?, ?, NULL) ON CONFLICT (k) DO UPDATE SET o = "
                    "CASE WHEN o = 'delivered' THEN o ELSE 'unknown' END",
                    ((key, UNKNOWN) for key in record["c"]),
                )
            elif "k" in record and record.get("o") in OUTCOMES:
                self.db.execute(
                    "INSERT INTO before VALUES (?, ?, ?) ON CONFLICT (k) DO UPDATE SET o = "
                    "CASE WHEN before.o = 'delivered' THEN before.o ELSE excluded.o END, r = excluded.r",
                    (record["k"], record["o"], record.get("r")),
                )
        self.commit()

    def earlier(self, key: str) -> tuple[str, str | None] | None:
        """The outcome of ``key`` in an earlier try, if any."""
        row = self.db.execute("SELECT o, r FROM before WHERE k = ?", (key,)).fetchone()
        return (row[0], row[1]) if row else None

    def seen(self, key: str) -> bool:
        """Whether ``key`` already came in this run's input."""
        return self.db.execute("SELECT 1 FROM now WHERE k = ? LIMIT 1", (key,)).fetchone() is not None

    def add(
        self,
        number: int,
        key: str | None,
        who: str,
        outcome: str | None,
        reason: str | None = None,
        *,
        earlier: bool = False,
    ) -> None:
        """Record an input row; ``outcome`` None while it is being sent."""
        self.db.execute(
            "INSERT INTO now VALUES (?, ?, ?, ?, ?, ?)", (number, key, who, outcome, reason, int(earlier))
        )
        self._tick()

    def settle(self, number: int, outcome: str, reason: str | None, *, earlier: bool = False) -> None:
        """Set a row's outcome (``earlier``: an earlier try's, found out now)."""
        self.db.execute(
            "UPDATE now SET o = ?, r = ?, earlier = ? WHERE n = ?", (outcome, reason, int(earlier), number)
        )
        self._tick()

    def unsettled(self) -> Iterator[int]:
        """Rows still without an outcome."""
        for (number,) in self.db.execute("SELECT n FROM now WHERE o IS NULL").fetchall():
            yield number

    def report_lines(self) -> Iterator[str]:
        """The per-recipient report, one JSON line per input row, in input order."""
        self.commit()
        for number, who, outcome, reason, earlier in self.db.execute(
            "SELECT n, who, o, r, earlier FROM now ORDER BY n"
        ):
            line: dict[str, Any] = {"row": number, "recipient": who, "outcome": outcome}
            if reason:
                line["reason"] = reason
            if earlier:
                line["earlier_try"] = True
            yield json.dumps(line, ensure_ascii=False) + "\n"

    def _tick(self) -> None:
        self._pending += 1
        if self._pending >= 5000:
            self.commit()

    def commit(self) -> None:
        """End the transaction and start another."""
        self.db.execute("COMMIT")
        self.db.execute("BEGIN")
        self._pending = 0

    def close(self) -> None:
        """Delete the index."""
        with contextlib.suppress(sqlite3.Error):
            self.db.execute("COMMIT")
        self.db.close()
        self._dir.cleanup()
