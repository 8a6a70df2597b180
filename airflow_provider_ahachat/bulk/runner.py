"""
The bulk engine: one AhaChat action for many recipients, fast, polite and exactly once.

No Airflow import here. The engine reads recipients as a stream, validates and renders each
request, and sends them over the client's pooled connections from ``concurrency`` worker threads,
under one client-side rate limit that every worker shares. A 429 pauses all the workers together.

Every recipient's fate goes into a :class:`Ledger`, a journal written as the run goes to a folder
the caller chooses (a local folder or object storage). A recipient is *claimed* in the journal
before their request is sent and gets an outcome after, so a run that is killed and started again
skips who was already reached, and marks who may or may not have been reached as ``unknown``
rather than messaging them twice. An index of the journal in a temporary SQLite file keeps memory
flat however large the audience.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import logging
import math
import pathlib
import queue
import sqlite3
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from airflow_provider_ahachat.client import AhaChatClient, ApiRequest, user_from_data
from airflow_provider_ahachat.exceptions import (
    AhaChatAuthError,
    AhaChatError,
    AhaChatRateLimitError,
    AhaChatValidationError,
)
from airflow_provider_ahachat.models import (
    DynamicMessage,
    MessageTag,
    Recipient,
    load_json,
    validate_attribute_names,
    validate_attributes,
    validate_block_name,
    validate_tags,
    validate_text,
)

log = logging.getLogger(__name__)

#: The final outcome of one input row.
DELIVERED = "delivered"  # AhaChat accepted the request (now or in an earlier try of the task)
FAILED = "failed"  # AhaChat refused it for this recipient (unknown user, outside the window, ...)
INVALID = "invalid"  # the row itself is wrong (no user_id, a bad phone, a reserved attribute)
UNKNOWN = "unknown"  # sent, but whether AhaChat processed it is unknown; not resent by default
DUPLICATE = "duplicate"  # the same recipient came earlier in the input
NOT_SENT = "not_sent"  # the run stopped before this recipient's turn
WOULD_SEND = "would_send"  # a dry run's outcome for a row it would send
OUTCOMES = (DELIVERED, FAILED, INVALID, UNKNOWN, DUPLICATE, NOT_SENT, WOULD_SEND)

#: Outcomes that count against ``max_failures`` and ``max_failure_ratio``.
COUNTED_AS_FAILURES = (FAILED, INVALID, UNKNOWN, NOT_SENT)

_ID_COLUMNS = ("user_id", "messenger_user_id")
_ROW_KEYS = {*_ID_COLUMNS, "phone", "attributes"}


# --------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class BulkAction:
    """
    One action, its shared arguments validated once, ready to be built for each recipient.

    :param name: the action, as the operators and the summary name it (``add_tags``...).
    :param build: builds the request for one recipient and their own attributes.
    :param by_phone: whether the request can address a recipient by phone; if not, a row with only
        a phone is first looked up to find its user ID.
    :param takes_attributes: whether rows' extra columns are attributes for this action.
    :param sends_message: whether the action messages the recipient.
    """

    name: str
    build: Callable[[Recipient, Mapping[str, Any]], ApiRequest]
    by_phone: bool = False
    takes_attributes: bool = False
    sends_message: bool = False


def bulk_action(client: AhaChatClient, action: str, **arguments: Any) -> BulkAction:
    """
    The :class:`BulkAction` for ``action``, its shared ``arguments`` validated now, before any row.

    ``action`` is one of ``add_tags``, ``remove_tags`` (``tags=``), ``add_attributes``
    (``attributes=``, merged under each row's own), ``reset_attributes`` (``names=``), ``send_text``
    (``text=``), ``send_message`` (``message=``) and ``broadcast_block`` (``block_name=``,
    ``message_tag=``, ``attributes=``).
    """
    if action in ("add_tags", "remove_tags"):
        tags = validate_tags(arguments.get("tags"))
        prepare = client.prepare_add_tags if action == "add_tags" else client.prepare_remove_tags
        return BulkAction(action, lambda who, _: prepare(who.user_id, tags))
    if action == "add_attributes":
        shared = validate_attributes(arguments.get("attributes"), allow_empty=True)

        def add(who: Recipient, own: Mapping[str, Any]) -> ApiRequest:
            merged = {**shared, **own}
            if not merged:
                raise AhaChatValidationError("attributes: give at least one attribute")
            return client.prepare_add_attributes(who.user_id, merged)

        return BulkAction(action, add, takes_attributes=True)
    if action == "reset_attributes":
        names = validate_attribute_names(arguments.get("names"))
        return BulkAction(action, lambda who, _: client.prepare_reset_attributes(who.user_id, names))
    if action == "send_text":
        text = validate_text(arguments.get("text"))
        return BulkAction(
            action, lambda who, _: client.prepare_send_text(who.user_id, text), sends_message=True
        )
    if action == "send_message":
        message = DynamicMessage.parse(arguments.get("message"))
        return BulkAction(
            action, lambda who, _: client.prepare_send_message(who.user_id, message), sends_message=True
        )
    if action == "broadcast_block":
        block = validate_block_name(arguments.get("block_name"))
        tag = MessageTag.parse(arguments.get("message_tag"))
        shared = validate_attributes(arguments.get("attributes"), allow_empty=True)

        def broadcast(who: Recipient, own: Mapping[str, Any]) -> ApiRequest:
            return client.prepare_broadcast_block(
                block, user_id=who.user_id, phone=who.phone, message_tag=tag, attributes={**shared, **own}
            )

        return BulkAction(action, broadcast, by_phone=True, takes_attributes=True, sends_message=True)
    raise AhaChatValidationError(f"action: unknown bulk action {action!r}")


# --------------------------------------------------------------------------- recipients


@dataclass(frozen=True)
class Row:
    """
    One recipient from the input.

    :param number: the row's number in the input, from 1 (a file's header is not counted).
    :param recipient: who.
    :param attributes: the row's own attributes, validated.
    """

    number: int
    recipient: Recipient
    attributes: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """The ledger's key for the recipient: ``user:<id>`` or ``phone:<number>``."""
        who = self.recipient
        return f"user:{who.user_id}" if who.user_id else f"phone:{who.phone}"


def parse_row(number: int, raw: Any, *, takes_attributes: bool) -> Row:
    """
    Read one input item: a user ID, or a mapping with ``user_id`` or ``phone``, optional
    ``attributes`` (a mapping or JSON object string), and, for actions that take attributes, any
    other column as an attribute. Empty cells are ignored. A row with both a user ID and a phone
    (an export often has both columns) is addressed by its user ID.

    :raises AhaChatValidationError: naming the row and the field.
    """
    try:
        if isinstance(raw, Mapping):
            values = {str(k).strip(): v for k, v in raw.items() if k is not None and v not in (None, "")}
            user_id = next((values[c] for c in _ID_COLUMNS if c in values), None)
            phone = values.get("phone") if user_id is None else None
            recipient = Recipient.of(user_id=user_id, phone=phone)
            attributes: dict[str, Any] = {}
            if takes_attributes:
                own = values.get("attributes")
                if own is not None:
                    own = load_json(own, "attributes")
                    if not isinstance(own, Mapping):
                        raise AhaChatValidationError("attributes: must be an object of name to value")
                    attributes.update(own)
                attributes.update({k: v for k, v in values.items() if k not in _ROW_KEYS})
                attributes = validate_attributes(attributes, allow_empty=True)
            return Row(number, recipient, attributes)
        if isinstance(raw, str | int) and not isinstance(raw, bool):
            return Row(number, Recipient.of(user_id=raw))
        raise AhaChatValidationError(
            f"a recipient is a user ID or a mapping with user_id or phone, got {type(raw).__name__}"
        )
    except AhaChatValidationError as err:
        raise AhaChatValidationError([f"row {number}: {problem}" for problem in err.problems]) from None


def read_recipients(path: Any) -> Iterator[Any]:
    """
    Stream the rows of a CSV (with a header) or JSON Lines file, one at a time.

    ``path`` is a :class:`pathlib.Path` or an Airflow ``ObjectStoragePath``. The format comes from
    the extension: ``.csv``, or ``.jsonl``/``.ndjson``/``.json`` (one JSON value per line).
    """
    kind = _file_kind(path)
    with path.open("rb") as raw, io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as text:
        if kind == "csv":
            yield from csv.DictReader(text)
            return
        for number, line in enumerate(text, start=1):
            if line.strip():
                try:
                    yield json.loads(line)
                except ValueError:
                    yield _BadLine(number)


def count_recipients(path: Any) -> int:
    """How many rows :func:`read_recipients` will give, counted by one streaming pass."""
    kind = _file_kind(path)
    with path.open("rb") as raw:
        if kind == "csv":
            text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
            return max(0, sum(1 for row in csv.reader(text) if row) - 1)  # DictReader skips blank lines
        return sum(1 for line in raw if line.strip())


def _file_kind(path: Any) -> str:
    name = path.name.lower()
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    raise AhaChatValidationError(
        f"recipients: {path.name!r} must end in .csv, .jsonl, .ndjson or .json (one JSON value per line)"
    )


@dataclass(frozen=True)
class _BadLine:
    line: int


# --------------------------------------------------------------------------- the ledger


class LedgerFolder(Protocol):
    """A folder: :class:`pathlib.Path` or an Airflow ``ObjectStoragePath``."""

    def __truediv__(self, other: str) -> Any: ...

    def iterdir(self) -> Any: ...

    def mkdir(self, *args: Any, **kwargs: Any) -> Any: ...


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


class Ledger:
    """
    The journal of one task's deliveries, for exactly-once across tries.

    Each try appends JSON lines to its own journal: a local file it keeps open and flushes after
    every write, or, on object storage, which cannot append, one new object per write. A line is
    ``{"c": [keys]}`` (claimed: about to be sent) or ``{"k": key, "o": outcome, ...}``. On start,
    every earlier journal is replayed: a recipient claimed without an outcome is ``unknown``.

    In a local journal each recipient is claimed by the worker right before their request goes
    out, so a process killed outright leaves at most ``concurrency`` recipients unknown. On object
    storage recipients are claimed a batch at a time, before the batch is queued, so up to about
    four times ``concurrency`` may be left unknown.

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
        self.writes = 0

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
            self._write(data)

    def _write(self, data: str) -> None:
        if self._local is not None:
            if self._file is None:
                self._local.mkdir(parents=True, exist_ok=True)
                self._file = (self._local / f"journal-{self._attempt}.jsonl").open("a", encoding="utf-8")
            self._file.write(data)
            self._file.flush()
        else:
            name = f"journal-{self._attempt}-{next(self._segment):07d}.jsonl"
            with (self.folder / name).open("wb") as handle:
                handle.write(data.encode("utf-8"))
        self.writes += 1

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


class _Index:
    """Every recipient's state, in a temporary SQLite file, so memory stays flat."""

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

    def settle(self, number: int, outcome: str, reason: str | None) -> None:
        """Set a row's outcome."""
        self.db.execute("UPDATE now SET o = ?, r = ? WHERE n = ?", (outcome, reason, number))
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
        """End the transaction and start another: writes are batched, a few thousand at a time."""
        self.db.execute("COMMIT")
        self.db.execute("BEGIN")
        self._pending = 0

    def close(self) -> None:
        """Delete the index."""
        with contextlib.suppress(sqlite3.Error):
            self.db.execute("COMMIT")
        self.db.close()
        self._dir.cleanup()


# --------------------------------------------------------------------------- pacing


class RateLimiter:
    """
    One pace for every worker: at most ``rate`` requests per second, evenly spaced.

    A 429 pauses every worker until its ``Retry-After`` has passed and lowers the pace by a fifth;
    the pace then climbs back by a hundredth of the limit per success.

    :param rate: requests per second; None or 0 for no limit (429s still pause everyone).
    """

    def __init__(self, rate: float | None) -> None:
        self.limit = float(rate) if rate else 0.0
        self.rate = self.limit
        self._next = time.monotonic()
        self._lock = threading.Lock()
        self.pauses = 0

    def acquire(self, stop: threading.Event | None = None) -> None:
        """Wait for this worker's turn."""
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + (1.0 / self.rate if self.rate > 0 else 0.0)
        wait = slot - time.monotonic()
        if wait > 0:
            if stop is not None:
                stop.wait(wait)
            else:
                time.sleep(wait)

    def slow_down(self, retry_after: float | None) -> None:
        """A 429 came back: pause everyone, and go slower."""
        with self._lock:
            resume = time.monotonic() + (retry_after if retry_after is not None else 1.0)
            if resume > self._next:
                self._next = resume
                self.pauses += 1
            if self.limit > 0:
                self.rate = max(self.limit * 0.1, self.rate * 0.8)

    def succeeded(self) -> None:
        """A request went through: creep back to the configured pace."""
        if self.limit > 0 and self.rate < self.limit:
            with self._lock:
                self.rate = min(self.limit, self.rate + self.limit * 0.01)


# --------------------------------------------------------------------------- the run


class AhaChatBulkError(AhaChatError):
    """
    A bulk run ended with more failures than allowed, or stopped early.

    :param message: what happened, with counts.
    :param summary: the run's summary, as :meth:`BulkRunner.run` returns it.
    """

    def __init__(self, message: str, summary: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.summary = dict(summary or {})

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.message, self.summary))


@dataclass
class _Job:
    row: Row
    request: ApiRequest | None  # None: look the phone up first


@dataclass
class _Outcome:
    row: Row
    outcome: str
    reason: str | None = None
    fatal: AhaChatError | None = None


_STOP = object()


def _record(result: _Outcome) -> dict[str, Any]:
    """The journal line of an outcome."""
    record: dict[str, Any] = {"k": result.row.key, "o": result.outcome}
    if result.reason:
        record["r"] = result.reason
    return record


class _Stopped(Exception):
    """The run was stopped before this request was sent."""


class BulkRunner:
    """
    Run one action for many recipients.

    :param client: the API client (its pooled connections are shared by the workers).
    :param action: what to do for each recipient; see :func:`bulk_action`.
    :param ledger: the journal for exactly-once across tries; None to keep none (each try then
        starts from scratch).
    :param concurrency: requests in flight at once.
    :param rate_limit: requests per second for the whole run; None or 0 for no limit.
    :param max_failures: the most failed, invalid, unknown or unsent rows allowed; more fail the
        run once every row has had its turn.
    :param max_failure_ratio: the largest share of such rows allowed. Either limit applies only
        when given; with neither, any such row fails the run (``max_failure_ratio=1`` never does).
    :param resend_unknown: send again to recipients whose earlier outcome is unknown, at the risk of
        a duplicate. Actions that message nobody (tags, attributes) are always safe to resend.
    :param dry_run: validate and render every request, send nothing, write nothing to the journal.
    :param progress_interval: seconds between progress lines in the log.
    :param logger: where progress goes.
    :param sample_size: how many requests a dry run shows in its summary.
    """

    def __init__(
        self,
        client: AhaChatClient,
        action: BulkAction,
        *,
        ledger: Ledger | None = None,
        concurrency: int = 8,
        rate_limit: float | None = None,
        max_failures: int | None = None,
        max_failure_ratio: float | None = None,
        resend_unknown: bool = False,
        dry_run: bool = False,
        progress_interval: float = 5.0,
        logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
        sample_size: int = 10,
    ) -> None:
        problems = []
        if not isinstance(concurrency, int) or isinstance(concurrency, bool) or not 1 <= concurrency <= 256:
            problems.append(f"concurrency: must be a whole number from 1 to 256, got {concurrency!r}")
        if rate_limit is not None and (not isinstance(rate_limit, int | float) or rate_limit < 0):
            problems.append(f"rate_limit: must be requests per second, 0 or more, got {rate_limit!r}")
        if max_failures is not None and (not isinstance(max_failures, int) or max_failures < 0):
            problems.append(f"max_failures: must be a whole number, 0 or more, got {max_failures!r}")
        if max_failure_ratio is not None and (
            not isinstance(max_failure_ratio, int | float) or not 0 <= max_failure_ratio <= 1
        ):
            problems.append(f"max_failure_ratio: must be from 0 to 1, got {max_failure_ratio!r}")
        if progress_interval <= 0:
            problems.append(f"progress_interval: must be above 0 seconds, got {progress_interval!r}")
        if problems:
            raise AhaChatValidationError(problems)
        self.client = client
        self.action = action
        self.ledger = ledger
        self.concurrency = concurrency
        self.limiter = RateLimiter(rate_limit)
        self.max_failures = 0 if max_failures is None and max_failure_ratio is None else max_failures
        self.max_failure_ratio = max_failure_ratio
        self.resend_unknown = resend_unknown or not action.sends_message
        self._claim_on_send = ledger is not None and ledger.appends and not dry_run
        self.dry_run = dry_run
        self.progress_interval = progress_interval
        self.log = logger or log
        self.sample_size = sample_size
        self.stop_event = threading.Event()
        self._stop_requested = False
        self._closing = threading.Event()
        self._results: queue.Queue[_Outcome] = queue.Queue()
        self._jobs: queue.Queue[Any] = queue.Queue(maxsize=concurrency * 2)
        self._counts: Counter[str] = Counter()
        self._failures: list[dict[str, Any]] = []
        self._samples: list[dict[str, Any]] = []
        self._already = 0
        self._fatal: AhaChatError | None = None
        self._pending_outcomes: list[dict[str, Any]] = []
        self._retries = Counter[str]()
        self._retries_lock = threading.Lock()

    def stop(self) -> None:
        """Stop dispatching: requests in flight finish and are recorded, the rest are ``not_sent``."""
        self._stop_requested = True
        self.stop_event.set()

    # -- the producer: the calling thread

    def run(self, recipients: Iterable[Any], total: int | None = None) -> dict[str, Any]:
        """
        Act for every recipient; return the summary.

        :param recipients: the input items; see :func:`parse_row`.
        :param total: how many there are, when known, for progress and the ETA.
        :raises AhaChatBulkError: when the failures exceed what is allowed, or on a fatal error
            (the token was refused); the summary is on the error.
        """
        started = time.monotonic()
        index = _Index()
        workers = [
            threading.Thread(target=self._work, name=f"ahachat-bulk-{i}", daemon=True)
            for i in range(0 if self.dry_run else self.concurrency)
        ]
        report = None
        try:
            if self.ledger is not None:
                index.load(self.ledger.replay())
            for worker in workers:
                worker.start()
            self._last_progress = started
            self._started = started
            self._total = total
            rows = 0
            chunk: list[_Job] = []
            chunk_size = max(1, self.concurrency)
            for number, raw in enumerate(recipients, start=1):
                rows = number
                self._drain(index)
                if self._should_stop():
                    index.add(number, None, _describe_raw(raw), NOT_SENT, "the run stopped before this row")
                    self._counts[NOT_SENT] += 1
                    continue
                job = self._admit(index, number, raw)
                if job is not None:
                    chunk.append(job)
                    if len(chunk) >= chunk_size:
                        self._dispatch(index, chunk)
                        chunk = []
            if chunk:
                if self._should_stop():
                    for job in chunk:
                        self._settle(index, _Outcome(job.row, NOT_SENT, "the run stopped before this row"))
                else:
                    self._dispatch(index, chunk)
            for _ in workers:
                self._put(index, _STOP)
            while any(worker.is_alive() for worker in workers):
                self._drain(index, wait=0.1)
            self._drain(index)
            for number in index.unsettled():  # cannot happen unless a worker died
                index.settle(number, UNKNOWN, "no outcome was recorded")
                self._counts[UNKNOWN] += 1
            self._flush_outcomes()
            self._progress(force=True)
            if self.ledger is not None:
                name = "dry-run.jsonl" if self.dry_run else "report.jsonl"
                report = self.ledger.write(name, index.report_lines())
            summary = self._summary(rows, time.monotonic() - started, report)
        finally:
            # On an error (a file that cannot be read, a database cursor that broke), the rows
            # still queued are not sent, and the requests in flight are waited for so that their
            # outcomes reach the journal before it is closed.
            self.stop_event.set()
            self._closing.set()
            for worker in workers:
                if worker.is_alive():
                    worker.join(timeout=sum(self.client.timeout) + 1)
            if self.ledger is not None:
                self.ledger.close()
            index.close()
        self._judge(summary)
        return summary

    def _should_stop(self) -> bool:
        return self.stop_event.is_set() or self._fatal is not None

    def _failed(self) -> int:
        return sum(self._counts[o] for o in COUNTED_AS_FAILURES)

    def _admit(self, index: _Index, number: int, raw: Any) -> _Job | None:
        """Validate, deduplicate and check the ledger for one row; the job to send, if any."""
        if isinstance(raw, _BadLine):
            reason = f"row {number}: line {raw.line} is not valid JSON"
            self._record_final(index, number, None, "?", INVALID, reason)
            return None
        try:
            row = parse_row(number, raw, takes_attributes=self.action.takes_attributes)
            request = (
                self.action.build(row.recipient, row.attributes)
                if row.recipient.user_id or self.action.by_phone
                else None
            )
        except AhaChatValidationError as err:
            self._record_final(index, number, None, _describe_raw(raw), INVALID, "; ".join(err.problems))
            return None
        who = row.recipient.describe()
        if index.seen(row.key):
            self._record_final(index, number, row.key, who, DUPLICATE, "the same recipient came earlier")
            return None
        earlier = index.earlier(row.key)
        if earlier is not None:
            before, before_reason = earlier
            if before == DELIVERED:
                self._already += 1
                self._record_final(index, number, row.key, who, DELIVERED, before_reason, earlier=True)
                return None
            if before == UNKNOWN and not self.resend_unknown:
                why = "an earlier try's outcome is unknown; not resent (resend_unknown=True resends)"
                self._record_final(index, number, row.key, who, UNKNOWN, why, earlier=True)
                return None
        if self.dry_run:
            if request is not None and len(self._samples) < self.sample_size:
                self._samples.append({"row": row.number, **request.preview()})
            self._record_final(index, number, row.key, who, WOULD_SEND, None)
            return None
        index.add(number, row.key, who, None)
        return _Job(row, request)

    def _record_final(
        self,
        index: _Index,
        number: int,
        key: str | None,
        who: str,
        outcome: str,
        reason: str | None,
        *,
        earlier: bool = False,
    ) -> None:
        index.add(number, key, who, outcome, reason, earlier=earlier)
        self._counts[outcome] += 1
        if outcome in (FAILED, INVALID, UNKNOWN) and len(self._failures) < 20:
            self._failures.append({"row": number, "recipient": who, "outcome": outcome, "reason": reason})

    def _dispatch(self, index: _Index, jobs: list[_Job]) -> None:
        """Claim ``jobs`` in the ledger, then hand them to the workers."""
        if self.ledger is not None and not self._claim_on_send:
            records = self._pending_outcomes
            self._pending_outcomes = []
            records.append({"c": [job.row.key for job in jobs]})
            self.ledger.append(records)
        for job in jobs:
            self._put(index, job)

    def _put(self, index: _Index, item: Any) -> None:
        while True:
            try:
                self._jobs.put(item, timeout=0.05)
                return
            except queue.Full:
                self._drain(index)

    def _drain(self, index: _Index, wait: float = 0.0) -> None:
        """Record the workers' outcomes; log progress when it is time."""
        try:
            first = self._results.get(timeout=wait) if wait else self._results.get_nowait()
        except queue.Empty:
            first = None
        while first is not None:
            self._settle(index, first)
            try:
                first = self._results.get_nowait()
            except queue.Empty:
                first = None
        now = time.monotonic()
        if now - self._last_progress >= self.progress_interval:
            self._flush_outcomes()
            self._progress()

    def _settle(self, index: _Index, result: _Outcome) -> None:
        row = result.row
        index.settle(row.number, result.outcome, result.reason)
        self._counts[result.outcome] += 1
        if not self._claim_on_send:  # else the worker wrote it already
            self._pending_outcomes.append(_record(result))
        if result.outcome in (FAILED, UNKNOWN) and len(self._failures) < 20:
            self._failures.append(
                {
                    "row": row.number,
                    "recipient": row.recipient.describe(),
                    "outcome": result.outcome,
                    "reason": result.reason,
                }
            )
        if result.fatal is not None and self._fatal is None:
            self._fatal = result.fatal
            self.log.error("AhaChat %s: stopping: %s", self.action.name, result.fatal)
        if len(self._pending_outcomes) >= 1000:
            self._flush_outcomes()

    def _flush_outcomes(self) -> None:
        if self.ledger is not None and self._pending_outcomes:
            self.ledger.append(self._pending_outcomes)
        self._pending_outcomes = []

    def _progress(self, *, force: bool = False) -> None:
        now = time.monotonic()
        self._last_progress = now
        elapsed = max(now - self._started, 1e-9)
        done = sum(self._counts.values())
        sent = sum(self._counts[o] for o in (DELIVERED, FAILED, UNKNOWN)) - self._already
        rate = sent / elapsed
        of = ""
        eta = ""
        if self._total:
            of = f" / {self._total:,} ({100 * done / self._total:.1f}%)"
            if rate > 0 and done < self._total and not force:
                eta = f", about {_duration((self._total - done) / max(rate, 1e-9))} left"
        word = "checked" if self.dry_run else "done"
        self.log.info(
            "AhaChat %s: %s%s %s, %.1f requests/s, %d delivered, %d failed, %d unknown, %d invalid%s",
            self.action.name,
            f"{done:,}",
            of,
            word,
            rate,
            self._counts[DELIVERED],
            self._counts[FAILED],
            self._counts[UNKNOWN],
            self._counts[INVALID],
            eta,
        )

    def _summary(self, rows: int, elapsed: float, report: str | None) -> dict[str, Any]:
        counts = {outcome: self._counts[outcome] for outcome in OUTCOMES if self._counts[outcome]}
        sent = self._counts[DELIVERED] + self._counts[FAILED] + self._counts[UNKNOWN] - self._already
        summary: dict[str, Any] = {
            "action": self.action.name,
            "dry_run": self.dry_run,
            "total": rows,
            "outcomes": counts,
            "delivered_in_earlier_tries": self._already,
            "requests_per_second": round(sent / elapsed, 1) if elapsed > 0 else 0.0,
            "seconds": round(elapsed, 3),
            "rate_limit_pauses": self.limiter.pauses,
            "retries": dict(self._retries),
            # Workers finish out of order: list the failures kept by their row, as the input has them.
            "first_failures": sorted(self._failures, key=lambda failure: failure["row"]),
            "report": report,
            "ledger": self.ledger.location() if self.ledger is not None else None,
        }
        if self.dry_run:
            summary["would_send"] = self._counts[WOULD_SEND]
            summary["sample_requests"] = self._samples
        return summary

    def _judge(self, summary: dict[str, Any]) -> None:
        failed = self._failed()
        rows = summary["total"]
        counts = ", ".join(f"{n} {o}" for o, n in summary["outcomes"].items()) or "no rows"
        where = f"; per-recipient report: {summary['report']}" if summary["report"] else ""
        if self._fatal is not None:
            raise AhaChatBulkError(
                f"AhaChat {self.action.name} stopped: {self._fatal} ({counts}){where}", summary
            )
        if self._stop_requested and self._counts[NOT_SENT]:
            raise AhaChatBulkError(
                f"AhaChat {self.action.name} was stopped part-way ({counts}){where}", summary
            )
        too_many = self.max_failures is not None and failed > self.max_failures
        too_large = self.max_failure_ratio is not None and rows > 0 and failed / rows > self.max_failure_ratio
        if too_many or too_large:
            limit = []
            if self.max_failures is not None:
                limit.append(f"max_failures={self.max_failures}")
            if self.max_failure_ratio is not None:
                limit.append(f"max_failure_ratio={self.max_failure_ratio:g}")
            first = "; ".join(
                f"row {f['row']} {f['recipient']}: {f['reason']}" for f in summary["first_failures"][:5]
            )
            raise AhaChatBulkError(
                f"AhaChat {self.action.name}: {failed} of {rows} rows were not delivered, more than "
                f"{' and '.join(limit)} allow ({counts}). First: {first}{where}",
                summary,
            )

    # -- the workers

    def _work(self) -> None:
        while True:
            try:
                job = self._jobs.get(timeout=0.2)
            except queue.Empty:
                if self._closing.is_set():
                    return
                continue
            if job is _STOP:
                return
            if self.stop_event.is_set() or self._fatal is not None:
                self._results.put(_Outcome(job.row, NOT_SENT, "the run stopped before this row"))
                continue  # never claimed: nothing to write
            try:
                result = self._deliver(job)
            except _Stopped:
                result = _Outcome(job.row, NOT_SENT, "the run stopped before this row")
            except Exception as exc:  # pragma: no cover - a bug; record rather than lose the row
                result = _Outcome(job.row, UNKNOWN, f"internal error: {type(exc).__name__}")
            if self._claim_on_send and self.ledger is not None:
                self.ledger.append([_record(result)])  # at once: a kill now loses nothing
            self._results.put(result)

    def _deliver(self, job: _Job) -> _Outcome:
        request = job.request
        if request is None:  # a phone, for an action that needs the user ID: look it up first
            lookup = self.client.prepare_find_user(phone=job.row.recipient.phone)
            data, error = self._send(lookup)
            if error is not None:
                return self._failure(job.row, error, sent=False)
            try:
                user = user_from_data(lookup, data)
                request = self.action.build(Recipient(user_id=user.messenger_user_id), job.row.attributes)
            except AhaChatError as err:
                return self._failure(job.row, err, sent=False)
        _, error = self._send(request, claim=job.row.key)
        if error is None:
            return _Outcome(job.row, DELIVERED)
        return self._failure(job.row, error, sent=True)

    def _failure(self, row: Row, error: AhaChatError, *, sent: bool) -> _Outcome:
        reason = str(error)
        if isinstance(error, AhaChatAuthError):  # refused before processing: nothing was sent
            self.stop_event.set()  # no other worker sends another request with this token
            return _Outcome(row, NOT_SENT, reason, fatal=error)
        if sent and error.outcome_unknown:
            return _Outcome(row, UNKNOWN, reason)
        if self.stop_event.is_set() and not sent:
            return _Outcome(row, NOT_SENT, reason)
        return _Outcome(row, FAILED, reason)

    def _send(self, request: ApiRequest, claim: str | None = None) -> tuple[Any, AhaChatError | None]:
        """
        One request, paced, retried as the client's policy allows; 429s pause every worker.

        ``claim`` is the recipient's key, claimed in a local journal just before the first attempt.
        """
        policy = self.client.retry
        started = time.monotonic()
        attempt = 0
        while True:
            self.limiter.acquire(self.stop_event)
            if self.stop_event.is_set():
                raise _Stopped
            if claim is not None and self._claim_on_send and self.ledger is not None:
                self.ledger.append([{"c": [claim]}])
                claim = None
            data, error = self.client.attempt(request)
            if error is None:
                self.limiter.succeeded()
                return data, None
            if isinstance(error, AhaChatRateLimitError):
                self.limiter.slow_down(error.retry_after)
                self._count_retry("429")
                if time.monotonic() - started > policy.max_retry_time:
                    return None, error
                continue  # the limiter holds everyone until Retry-After has passed
            attempt += 1
            wait = policy.delay(request, error, attempt, time.monotonic() - started)
            if wait is None or self.stop_event.is_set():
                return None, error
            self._count_retry(str(error.status or type(error).__name__))
            self.stop_event.wait(wait)

    def _count_retry(self, what: str) -> None:
        with self._retries_lock:
            self._retries[what] += 1


def _describe_raw(raw: Any) -> str:
    """Who an unparsed row names, as :meth:`Recipient.describe` words it."""
    if isinstance(raw, Mapping):
        for name in (*_ID_COLUMNS, "phone"):
            if raw.get(name) not in (None, ""):
                return f"{'phone' if name == 'phone' else 'user'} {str(raw[name]).strip()[:40]}"
        return "a row without user_id or phone"
    if isinstance(raw, _BadLine):
        return f"line {raw.line}"
    if isinstance(raw, str | int) and not isinstance(raw, bool):
        return f"user {str(raw).strip()[:40]}"
    text = repr(raw)
    return text if len(text) <= 60 else text[:57] + "..."


def _duration(seconds: float) -> str:
    seconds = math.ceil(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
