"""
Every recipient's state during a run, in a temporary SQLite file, so that memory stays flat however
large the audience. No Airflow import here.

The file lives in a folder ``ahachat-bulk-*`` of the temporary directory, locked (``flock``) by
the process of the run for as long as it runs. A worker killed mid-run cannot delete its folder;
the lock goes with the process, so the next run on the machine (a later try, or any other bulk
run) finds the folder unlocked and removes it (:func:`sweep_leftovers`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from airflow_provider_ahachat.bulk.report import OUTCOMES, UNKNOWN

try:
    import fcntl
except ImportError:  # not a POSIX system: nothing is locked, nothing swept
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

#: The prefix of a run's index folder in the temporary directory.
FOLDER_PREFIX = "ahachat-bulk-"
#: The lock file a run holds in its folder while it runs.
LOCK_NAME = "owner.lock"
#: A folder without a lock file (left by a release before 0.5) is removed once this old (seconds).
UNLOCKED_AFTER = 24 * 3600.0


def _abandoned(folder: Path, now: float) -> bool:
    """Whether no live process holds ``folder``: its lock is free, or it has none and is old."""
    try:
        fd = os.open(folder / LOCK_NAME, os.O_RDWR)
    except FileNotFoundError:
        return now - folder.stat().st_mtime > UNLOCKED_AFTER
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False  # a run holds it
    finally:
        os.close(fd)  # releases the lock taken just now
    return True


def sweep_leftovers(folder: str | None = None) -> list[str]:
    """
    Remove the index folders of runs whose process is gone (killed mid-run): those of this user in
    ``folder`` (the temporary directory by default) whose lock no process holds.

    :param folder: where the index folders are.
    :return: the names of the folders removed.
    """
    if fcntl is None:
        return []
    removed = []
    now = time.time()
    for path in Path(folder or tempfile.gettempdir()).glob(f"{FOLDER_PREFIX}*"):
        try:
            mine = not path.is_symlink() and path.is_dir() and path.stat().st_uid == os.getuid()
            if mine and _abandoned(path, now):
                shutil.rmtree(path)
                removed.append(path.name)
        except OSError:  # gone meanwhile (another run swept it), or not ours to remove
            continue
    if removed:
        log.info("AhaChat bulk: removed %d index folder(s) left by killed runs: %s", len(removed), removed)
    return removed


def _hold(folder: Path) -> int | None:
    """Lock ``folder`` for this process: the lock file appears only once locked."""
    if fcntl is None:
        return None
    fd = os.open(folder / f"{LOCK_NAME}.new", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.rename(folder / f"{LOCK_NAME}.new", folder / LOCK_NAME)
    return fd


class RunIndex:
    """
    The earlier tries' outcomes (``before``) and this run's rows (``now``), by recipient key.

    Writes are batched, a few thousand to a transaction.

    :param folder: where its folder goes (the temporary directory by default); the folders that
        killed runs left there are removed first.
    """

    def __init__(self, folder: str | None = None) -> None:
        sweep_leftovers(folder)
        self._dir = tempfile.TemporaryDirectory(prefix=FOLDER_PREFIX, dir=folder)
        self._lock = _hold(Path(self._dir.name))
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

    @property
    def folder(self) -> str:
        """Its folder (removed by :meth:`close`)."""
        return self._dir.name

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
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None
