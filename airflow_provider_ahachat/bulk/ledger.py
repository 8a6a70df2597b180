"""
The delivery ledger: a journal of who was claimed and reached, for exactly-once across tries.

- :class:`Ledger`: the journal's format and where it lives (a local folder, or object storage).
- :class:`Claims`: the claim protocol, when a recipient is claimed and when their outcome is written.
- :func:`task_folder`: the folder of one task instance under the ledger's root.

One run at a time holds a ledger (:meth:`Ledger.hold`): a local one by a lock on a file
(``fcntl.flock``, released by the OS when its process dies), one on object storage by a lease
object that its holder renews while the run lasts and that another run takes over only once it has
expired. A second run of the same task instance (a zombie's retry) waits, then fails naming the
holder: it never sends to anyone the first may still be sending to.

No Airflow import here.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import itertools
import json
import logging
import os
import pathlib
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import quote

from airflow_provider_ahachat.exceptions import AhaChatLedgerBusyError

log = logging.getLogger(__name__)

#: The file a local ledger is locked by, and the object a ledger on object storage is leased by.
LOCK_NAME = "ledger.lock"
LEASE_NAME = "ledger.lease"


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
    :param wait: seconds :meth:`hold` waits for another run to let go of the ledger before failing.
    :param lease_ttl: on object storage, seconds a lease lasts unless renewed (it is renewed every
        third of that); the hosts' clocks must agree to well within it.
    :param hold_by: ``"lock"`` or ``"lease"``; by default a lock for a local folder, a lease on
        object storage.
    """

    def __init__(
        self, folder: Any, *, wait: float = 60.0, lease_ttl: float = 60.0, hold_by: str | None = None
    ) -> None:
        self.folder = folder
        self._local = local_path(folder)
        self.wait = wait
        self.lease_ttl = lease_ttl
        self.hold_by = hold_by or ("lock" if self._local is not None else "lease")
        if self.hold_by not in ("lock", "lease") or (self.hold_by == "lock" and self._local is None):
            raise ValueError(f"hold_by: 'lock' (local folders only) or 'lease', got {hold_by!r}")
        self._lock_fd: int | None = None
        self._lease: _Lease | None = None
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

    def mark(self, key: str) -> str:
        """
        A value unique to this ledger and the recipient ``key``, the same in every try: what a
        run's ``delivery_mark`` attribute is set to, so that a later try can tell whether the
        message it could not confirm reached AhaChat. It starts with :attr:`mark_prefix`.

        The format must never change: a try run by a new release would take the marks its earlier
        try left for another message's, and send those messages again.
        """
        return self.mark_prefix + hashlib.sha256(key.encode()).hexdigest()[:12]

    @property
    def mark_prefix(self) -> str:
        """The start of every mark of this ledger (and of no other's)."""
        return hashlib.sha256(self.location().encode()).hexdigest()[:12] + "-"

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
        if self._local is not None:
            for entry in entries:
                with entry.open("rb") as handle:
                    yield from _records(handle)
            return
        # On object storage a journal is many small objects (one per group of claims): read them
        # several at a time, in order and a window at a time, so that a retry on another worker
        # starts sending sooner without holding every object in memory.
        with concurrent.futures.ThreadPoolExecutor(16, thread_name_prefix="ahachat-replay") as pool:
            for start in range(0, len(entries), 256):
                for blob in pool.map(_read_all, entries[start : start + 256]):
                    yield from _records(blob.splitlines())

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

    # -- one run at a time

    @property
    def holder(self) -> str:
        """Who this run is, as written in the lock or the lease for another run to read."""
        return f"host {socket.gethostname()} pid {os.getpid()} (try {self._attempt})"

    def hold(self, on_lost: Callable[[str], None] | None = None) -> None:
        """
        Hold the ledger for this run alone, waiting up to ``wait`` seconds for another run to let go.

        :param on_lost: called (from another thread) if a lease is lost while the run lasts: it was
            not renewed in time and another run took it over. The caller must stop sending.
        :raises AhaChatLedgerBusyError: naming the holder, when the wait is over.
        """
        if self.hold_by == "lock":
            self._hold_lock()
        else:
            self._lease = _Lease(self.folder / LEASE_NAME, self.holder, self.lease_ttl, on_lost)
            self._lease.take(self.wait, self.location())

    def _hold_lock(self) -> None:
        import fcntl

        assert self._local is not None
        self._local.mkdir(parents=True, exist_ok=True)
        path = self._local / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    holder = path.read_text(encoding="utf-8", errors="replace").strip()[:300] or "unknown"
                    raise _busy(self.location(), holder, self.wait) from None
                time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        os.ftruncate(fd, 0)
        os.write(fd, f"{self.holder}, since {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n".encode())
        self._lock_fd = fd

    def release(self) -> None:
        """Let go of the ledger (the lock or the lease), if this run holds it."""
        if self._lock_fd is not None:
            import fcntl

            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None
        if self._lease is not None:
            self._lease.give_back()
            self._lease = None

    def close(self) -> None:
        """Close the journal, and let go of the ledger."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self.release()


def _read_all(entry: Any) -> bytes:
    with entry.open("rb") as handle:
        return bytes(handle.read())


def _records(lines: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    """The journal records in ``lines``, in order; a line cut short by a crash is skipped."""
    for line in lines:
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict):
                yield record


def _busy(where: str, holder: str, waited: float) -> AhaChatLedgerBusyError:
    return AhaChatLedgerBusyError(
        f"The delivery ledger {where} is held by another run of this task ({holder}); waited "
        f"{waited:g}s. Nothing was sent: two runs at once would message the same people. If that "
        "run is gone, its hold ends with it (a lock at once, a lease when it expires); try again then",
        holder=holder,
    )


class _Lease:
    """
    A lease on object storage, which has no locks: an object naming its holder and when it expires.

    Taken when absent or expired: written, then read back after a moment, so that of two runs that
    wrote at once only the one whose write came last goes on. Renewed every third of its life by a
    thread; a run that finds it taken by another calls ``on_lost``.
    """

    def __init__(self, path: Any, holder: str, ttl: float, on_lost: Callable[[str], None] | None) -> None:
        self.path = path
        self.holder = holder
        self.ttl = ttl
        self.on_lost = on_lost
        self.settle = min(1.0, ttl / 10)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def read(self) -> dict[str, Any] | None:
        try:
            with self.path.open("rb") as handle:
                record = json.loads(handle.read(10_000))
        except (FileNotFoundError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def write(self) -> None:
        record = {"holder": self.holder, "expires": time.time() + self.ttl, "ttl": self.ttl}
        try:
            handle = self.path.open("wb")
        except FileNotFoundError:  # a file system with folders, and this one is new
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = self.path.open("wb")
        with handle:
            handle.write(json.dumps(record).encode())

    def take(self, wait: float, where: str) -> None:
        deadline = time.monotonic() + wait
        while True:
            current = self.read()
            if current is None or current.get("holder") == self.holder or _expired(current):
                self.write()
                time.sleep(self.settle)
                current = self.read()
                if current is not None and current.get("holder") == self.holder:
                    self._thread = threading.Thread(
                        target=self._renew, name="ahachat-ledger-lease", daemon=True
                    )
                    self._thread.start()
                    return
            if time.monotonic() >= deadline:
                holder = str((current or {}).get("holder", "unknown"))[:300]
                if current is not None and isinstance(current.get("expires"), int | float):
                    holder += f", lease expires in {max(0.0, current['expires'] - time.time()):.0f}s"
                raise _busy(where, holder, wait)
            time.sleep(min(max(self.settle, 0.2), max(0.0, deadline - time.monotonic())))

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                current = self.read()
                if current is not None and current.get("holder") != self.holder:
                    self._lost(f"another run took the lease over: {current.get('holder')}")
                    return
                self.write()
            except OSError as err:  # storage unreachable for now: the next renewal may get through
                log.warning("Could not renew the ledger lease %s: %s", self.path, err)

    def _lost(self, why: str) -> None:
        log.error("The ledger lease %s is lost (%s): stopping", self.path, why)
        if self.on_lost is not None:
            self.on_lost(why)

    def give_back(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with contextlib.suppress(OSError):
            current = self.read()
            if current is not None and current.get("holder") == self.holder:
                self.path.unlink()


def _expired(lease: dict[str, Any]) -> bool:
    expires = lease.get("expires")
    return not isinstance(expires, int | float) or expires < time.time()


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

    Each recipient is claimed by the worker right before their first attempt. With a local journal,
    cheap to append to, the claim and the outcome are each written the moment they are known. On
    object storage, where each write is an object, claims are written in groups: a worker whose
    recipient's turn has come writes every claim made meanwhile (and the outcomes known so far) in
    one object, while the others wait for that write, and their requests leave only once it is
    stored. Either way a process killed outright leaves at most ``concurrency`` recipients unknown,
    those whose requests were leaving. Without a ledger, or in a dry run, nothing is written. Safe
    to call from every worker.

    :param ledger: the journal, or None.
    :param dry_run: write nothing.
    """

    #: Outcomes held back for the next write, at most, on object storage.
    BATCH = 1000

    def __init__(self, ledger: Ledger | None, *, dry_run: bool = False) -> None:
        self.ledger = None if dry_run else ledger
        self.each = self.ledger is not None and self.ledger.appends
        self._pending: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        # Group writes of claims on object storage: the claims waiting for the next write, the
        # number of that write, the last one stored, and whether a worker is writing now.
        self._written_cond = threading.Condition(self._lock)
        self._claims: list[str] = []
        self._group = 1
        self._written = 0
        self._writing = False
        self._failed: dict[int, BaseException] = {}

    def queued(self, keys: list[str]) -> None:
        """A batch of recipients is about to be queued: nobody is claimed before their turn."""

    def sending(self, key: str) -> None:
        """A recipient's first attempt is about to leave: claim them, and return once it is stored."""
        if self.ledger is None:
            return
        if self.each:
            self.ledger.append([{"c": [key]}])
            return
        with self._written_cond:
            self._claims.append(key)
            group = self._group
            while self._written < group:
                if self._writing:
                    self._written_cond.wait()
                else:
                    self._write_group()
            failed = self._failed.get(group)
        if failed is not None:
            raise failed

    def _write_group(self) -> None:
        """Write the claims and outcomes waiting now as one object (called holding the lock)."""
        self._writing = True
        number, self._group = self._group, self._group + 1
        records: list[dict[str, Any]] = [*self._pending, {"c": self._claims}]
        self._pending, self._claims = [], []
        self._written_cond.release()
        try:
            assert self.ledger is not None
            self.ledger.append(records)
        except Exception as err:  # the claims are not stored: none of these requests may leave
            self._failed[number] = err
        finally:
            self._written_cond.acquire()
            self._writing = False
            self._written = number
            self._written_cond.notify_all()

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
