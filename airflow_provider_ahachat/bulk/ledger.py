"""
The delivery ledger: a journal of who was claimed and reached, for exactly-once across tries.

- :class:`Ledger`: the journal's format and where it lives (a local folder, or object storage).
- :class:`Claims`: the claim protocol, when a recipient is claimed and when their outcome is written.
- :func:`task_folder`: the folder of one task instance under the ledger's root.

No Airflow import here.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import pathlib
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import quote


def local_path(folder: Any) -> pathlib.Path | None:
    """
    The local path of ``folder``, or None when it is on object storage.

    The protocol decides, not the class: older ``universal_pathlib`` releases (under Airflow 3.1's
    ``ObjectStoragePath``) make every path, ``s3://`` ones too, a :class:`pathlib.Path`.
    """
    protocol = getattr(folder, "protocol", None)
    if protocol is None:
        return pathlib.Path(folder) if isinstance(folder, pathlib.PurePath) else None
    if protocol in ("", "file", "local"):
        path = str(getattr(folder, "path", "") or folder)
        return pathlib.Path(path.removeprefix("file://").removeprefix("local://"))
    return None


def task_folder(root: Any, *, dag_id: str, run_id: str, task_id: str, map_index: int | None) -> Any:
    """
    The ledger folder of one task instance under ``root``: one folder per DAG, run, task and map
    index, so that each task instance's deliveries are kept apart.

    :param root: a :class:`pathlib.Path` or an ``ObjectStoragePath``.
    """
    index = -1 if map_index is None else map_index
    for part in (f"dag_id={dag_id}", f"run_id={run_id}", f"task_id={task_id}", f"map_index={index}"):
        root = root / quote(part, safe="=")
    return root


class Ledger:
    """
    The journal of one task's deliveries.

    Each try appends JSON lines to its own journal: a local file it keeps open and flushes after
    every write, or, on object storage, which cannot append, one new object per write. A line is
    ``{"c": [keys]}`` (claimed: about to be sent) or ``{"k": key, "o": outcome, "r": reason}``.
    On start, every earlier journal is replayed: a recipient claimed without an outcome is
    ``unknown``. The reports of the run (``report.jsonl``) are written beside the journals.

    :param folder: the folder of this task's ledger (one per DAG, run, task and map index).
    """

    def __init__(self, folder: Any) -> None:
        self.folder = folder
        self._local = local_path(folder)
        # Sortable in time order, so that replaying the journals applies later tries last.
        self._attempt = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        self._segment = itertools.count(1)
        self._file: Any = None
        self._lock = threading.Lock()

    @property
    def appends(self) -> bool:
        """Whether the journal is a local file, cheap to append one line to before each request."""
        return self._local is not None

    def __repr__(self) -> str:
        return f"Ledger({str(self.folder)!r})"

    def location(self, name: str = "") -> str:
        """Where ``name`` inside the ledger is, as text."""
        return str(self.folder / name) if name else str(self.folder)

    def replay(self) -> Iterator[dict[str, Any]]:
        """Every record of earlier tries, oldest journal first."""
        if self._local is not None:
            if not self._local.is_dir():
                return
            entries: list[Any] = sorted(self._local.glob("journal-*.jsonl"))
        else:
            # Another process (an earlier try, on another worker) wrote these objects: list them
            # afresh, not from a listing the filesystem cached in this process.
            invalidate = getattr(getattr(self.folder, "fs", None), "invalidate_cache", None)
            if invalidate is not None:
                invalidate()
            try:
                entries = sorted(
                    (p for p in self.folder.iterdir() if p.name.startswith("journal-")), key=lambda p: p.name
                )
            except (FileNotFoundError, NotADirectoryError):  # no earlier try
                return
        for entry in entries:
            with entry.open("rb") as handle:
                for line in handle:
                    with contextlib.suppress(ValueError):  # a line cut short by a crash
                        record = json.loads(line)
                        if isinstance(record, dict):
                            yield record

    def append(self, records: list[dict[str, Any]]) -> None:
        """Write ``records`` durably (to the OS, or as an object) before returning."""
        if not records:
            return
        data = "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in records)
        with self._lock:
            if self._local is not None:
                if self._file is None:
                    self._local.mkdir(parents=True, exist_ok=True)
                    journal = self._local / f"journal-{self._attempt}.jsonl"
                    self._file = journal.open("a", encoding="utf-8")
                self._file.write(data)
                self._file.flush()
            else:
                name = f"journal-{self._attempt}-{next(self._segment):07d}.jsonl"
                with (self.folder / name).open("wb") as handle:
                    handle.write(data.encode("utf-8"))

    def write(self, name: str, lines: Iterable[str]) -> str:
        """Write a whole file ``name`` (a report) into the ledger folder; return where."""
        if self._local is not None:
            self._local.mkdir(parents=True, exist_ok=True)
            target: Any = self._local / name
            with target.open("w", encoding="utf-8") as handle:
                handle.writelines(lines)
            return str(target)
        target = self.folder / name
        with target.open("wb") as handle:
            for line in lines:
                handle.write(line.encode("utf-8"))
        return str(target)

    def close(self) -> None:
        """Close the journal."""
        if self._file is not None:
            self._file.close()
            self._file = None


def outcome_record(key: str, outcome: str, reason: str | None) -> dict[str, Any]:
    """The journal line of an outcome."""
    record: dict[str, Any] = {"k": key, "o": outcome}
    if reason:
        record["r"] = reason
    return record


class Claims:
    """
    The claim protocol: a recipient is claimed in the journal before their request can leave, and
    gets an outcome after.

    With a local journal, cheap to append to, each recipient is claimed by the worker right before
    their first attempt, and the outcome is written the moment it is known: a process killed outright
    leaves at most ``concurrency`` recipients unknown. On object storage, where each write is an
    object, recipients are claimed a batch at a time as they are queued, together with the outcomes
    known so far: up to about four times ``concurrency`` may be left unknown. Without a ledger, or in
    a dry run, nothing is written. Safe to call from every worker.

    :param ledger: the journal, or None.
    :param dry_run: write nothing.
    """

    #: Outcomes held back for the next batch write, at most, on object storage.
    BATCH = 1000

    def __init__(self, ledger: Ledger | None, *, dry_run: bool = False) -> None:
        self.ledger = None if dry_run else ledger
        self.each = self.ledger is not None and self.ledger.appends
        self._pending: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def queued(self, keys: list[str]) -> None:
        """A batch of recipients is about to be queued (claimed now on object storage)."""
        if self.ledger is not None and not self.each:
            with self._lock:
                records, self._pending = self._pending, []
            self.ledger.append([*records, {"c": keys}])

    def sending(self, key: str) -> None:
        """A recipient's first attempt is about to leave (claimed now in a local journal)."""
        if self.each and self.ledger is not None:
            self.ledger.append([{"c": [key]}])

    def settled(self, key: str, outcome: str, reason: str | None) -> None:
        """A claimed recipient's outcome is known."""
        if self.ledger is None:
            return
        record = outcome_record(key, outcome, reason)
        if self.each:
            self.ledger.append([record])
            return
        with self._lock:
            self._pending.append(record)
            full = len(self._pending) >= self.BATCH
        if full:
            self.flush()

    def flush(self) -> None:
        """Write the outcomes held back."""
        if self.ledger is None:
            return
        with self._lock:
            records, self._pending = self._pending, []
        self.ledger.append(records)
