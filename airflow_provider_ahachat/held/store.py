"""
Where held messages live: one table, ``ahachat_held``, in a SQL database that every worker and API
server reaches. Never Airflow's metadata database (Airflow has no migrations for providers).

- On one machine (``airflow standalone``, or workers and API servers on one host), a SQLite file:
  :meth:`HeldStore.sqlite`. SQLite locks the file for each write, across processes.
- Across machines, a PostgreSQL database the user names (an Airflow connection):
  :meth:`HeldStore.from_url`. Only these two dialects are accepted: they are the ones tested.

Guarantees:

- **Exactly once.** :meth:`HeldStore.deliver` reads a customer's pending messages and marks the ones
  it answers with as delivered in one transaction that holds a lock on them (PostgreSQL:
  ``SELECT ... FOR UPDATE``; SQLite: ``BEGIN IMMEDIATE``, the database's write lock) and commits
  before the answer leaves. A second call of the same customer at the same moment, from another
  process or another machine, waits for that lock, then sees those messages delivered.
- **Held once.** A message held with a ``key`` (the task instance and the customer) is stored once
  however many tries hold it again.
- **Order.** A customer's messages are delivered oldest first (the time they were held, then the
  order they were stored in), as many as one answer can carry (:func:`~.answer.fits`).
- **Expiry.** A message is delivered only before its expiry (``expires_at`` > now, by the clock of
  the process that delivers). Rows are removed :data:`KEEP_AFTER_EXPIRY` after their expiry.
- **Isolation.** A message is delivered only to a call for its connection, its bot and its customer.
- **Bad data.** A stored message that no longer passes the rules (:func:`~.messages.parse_piece`)
  is marked ``bad``, never delivered, and does not hold back the customer's other messages.

No Airflow import: SQLAlchemy Core (which Airflow installs) and the standard library.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from airflow_provider_ahachat.exceptions import AhaChatValidationError
from airflow_provider_ahachat.held import validate_hold_for
from airflow_provider_ahachat.held.answer import MAX_PER_ANSWER, fits
from airflow_provider_ahachat.held.messages import KINDS, Piece, parse_piece
from airflow_provider_ahachat.models import validate_user_id

if TYPE_CHECKING:
    from sqlalchemy.sql import Select

__all__ = ["KEEP_AFTER_EXPIRY", "TABLE", "Customer", "Held", "HeldStore", "Hold", "Selection", "TaskRef"]

log = logging.getLogger(__name__)

#: The table's name.
TABLE = "ahachat_held"
#: How long a row is kept after its expiry, whatever became of it (for listing and audits).
KEEP_AFTER_EXPIRY = timedelta(days=30)
#: The dialects the store accepts.
DIALECTS = ("sqlite", "postgresql")
#: Seconds a SQLite write waits for another process's write to end.
SQLITE_BUSY_SECONDS = 30
#: What a row's ``state`` may be. ``held`` rows past their expiry are listed as ``expired``.
STATES = ("held", "delivered", "dropped", "bad")

_metadata = MetaData()
held_table = Table(
    TABLE,
    _metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
    Column("conn_id", String(250), nullable=False),
    Column("bot_id", String(32), nullable=False),
    Column("user_id", String(32), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("body", Text(), nullable=False),
    Column("held_at", Float(), nullable=False),
    Column("expires_at", Float(), nullable=False),
    Column("hold_key", String(64), nullable=False, unique=True),
    Column("dag_id", String(250)),
    Column("run_id", String(250)),
    Column("task_id", String(250)),
    Column("map_index", Integer()),
    Column("state", String(16), nullable=False),
    Column("done_at", Float()),
    Column("delivery", String(100)),
    Index(f"ix_{TABLE}_customer", "conn_id", "bot_id", "user_id", "state", "held_at"),
    Index(f"ix_{TABLE}_expires", "expires_at"),
)


@dataclass(frozen=True)
class Customer:
    """
    Who a message is for: a customer of one bot, reached through one connection.

    :param conn_id: the ``ahachat`` connection.
    :param bot_id: the connection's Bot ID.
    :param user_id: the customer's ``messenger_user_id``.
    """

    conn_id: str
    bot_id: str
    user_id: str

    @classmethod
    def of(cls, conn_id: Any, bot_id: Any, user_id: Any) -> Customer:
        """
        A customer, checked: a connection ID, a Bot ID of digits, a ``messenger_user_id``.

        :raises AhaChatValidationError: naming each bad field.
        """
        problems = []
        if not isinstance(conn_id, str) or not 0 < len(conn_id) <= 250:
            problems.append("conn_id: must be a connection ID of 1 to 250 characters")
        if not isinstance(bot_id, str) or not bot_id.isdigit() or len(bot_id) > 32:
            problems.append("bot_id: must be the Bot ID, digits only")
        try:
            user_id = validate_user_id(user_id)
        except AhaChatValidationError as err:
            problems.extend(err.problems)
        if problems:
            raise AhaChatValidationError(problems)
        return cls(conn_id, bot_id, user_id)


@dataclass(frozen=True)
class TaskRef:
    """
    The task instance that held a message.

    :param dag_id: its DAG.
    :param run_id: its DAG run.
    :param task_id: its task.
    :param map_index: its map index (-1 when not mapped).
    """

    dag_id: str
    run_id: str
    task_id: str
    map_index: int = -1


@dataclass(frozen=True)
class Hold:
    """
    A message to hold.

    :param customer: who it is for.
    :param kind: the action it stands for (:data:`~.messages.KINDS`).
    :param piece: the message, validated (:func:`~.messages.held_piece`).
    :param hold_for: how long it may wait (a timedelta or seconds; see
        :func:`~airflow_provider_ahachat.held.validate_hold_for`).
    :param key: the same key is held once (a task instance and a customer: a retry holds nothing
        more); None for a key of its own.
    :param task: the task instance that holds it.
    """

    customer: Customer
    kind: str
    piece: Piece
    hold_for: Any = None
    key: str | None = None
    task: TaskRef | None = None

    def row(self, now: float) -> dict[str, Any]:
        """The table row of this message, held at ``now``."""
        if self.kind not in KINDS:
            raise AhaChatValidationError(f"kind: {self.kind!r} cannot be held; use one of {', '.join(KINDS)}")
        key = self.key if self.key is not None else uuid.uuid4().hex
        task = self.task
        return {
            "conn_id": self.customer.conn_id,
            "bot_id": self.customer.bot_id,
            "user_id": self.customer.user_id,
            "kind": self.kind,
            "body": self.piece.dumps(),
            "held_at": now,
            "expires_at": now + validate_hold_for(self.hold_for).total_seconds(),
            "hold_key": hashlib.sha256(key.encode("utf-8")).hexdigest(),
            "dag_id": task.dag_id if task else None,
            "run_id": task.run_id if task else None,
            "task_id": task.task_id if task else None,
            "map_index": task.map_index if task else None,
            "state": "held",
        }


def _iso(seconds: float | None) -> str | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, timezone.utc).isoformat()


@dataclass(frozen=True)
class Held:
    """
    A stored message, as :meth:`HeldStore.select`, :meth:`~HeldStore.deliver` and
    :meth:`~HeldStore.drop` give it.

    :param id: its number in the table.
    :param customer: who it is for.
    :param kind: the action it stands for.
    :param body: the stored piece (JSON text).
    :param held_at: when it was held (seconds since the epoch).
    :param expires_at: when it expires.
    :param state: ``held``, ``delivered``, ``dropped`` or ``bad``.
    :param task: the task instance that held it.
    :param done_at: when it was delivered, dropped or found bad.
    :param delivery: the call that delivered it.
    """

    id: int
    customer: Customer
    kind: str
    body: str
    held_at: float
    expires_at: float
    state: str
    task: TaskRef | None = None
    done_at: float | None = None
    delivery: str | None = None

    @classmethod
    def of(cls, row: Any) -> Held:
        """A message from a row of the table (its values read as stored, not checked)."""
        task = None
        if row.dag_id is not None:
            task = TaskRef(
                row.dag_id, row.run_id, row.task_id, -1 if row.map_index is None else row.map_index
            )
        return cls(
            id=int(row.id),
            customer=Customer(row.conn_id, row.bot_id, row.user_id),
            kind=row.kind,
            body=row.body,
            held_at=float(row.held_at),
            expires_at=float(row.expires_at),
            state=row.state,
            task=task,
            done_at=row.done_at,
            delivery=row.delivery,
        )

    def piece(self) -> Piece:
        """
        The message, held to the rules again.

        :raises AhaChatValidationError: when the stored data is not a valid message.
        """
        if self.kind not in KINDS:
            raise AhaChatValidationError(f"kind: {self.kind!r} is not a kind of held message")
        return parse_piece(self.body)

    def status(self, now: float) -> str:
        """:attr:`state`, or ``expired`` for a message still held past its expiry."""
        return "expired" if self.state == "held" and self.expires_at <= now else self.state

    def to_json(self, now: float) -> dict[str, Any]:
        """The message as a task's XCom and an asset event show it (the message itself if valid)."""
        try:
            message: dict[str, Any] | None = self.piece().to_json()
        except AhaChatValidationError:
            message = None
        task = self.task
        return {
            "id": self.id,
            "conn_id": self.customer.conn_id,
            "bot_id": self.customer.bot_id,
            "messenger_user_id": self.customer.user_id,
            "kind": self.kind,
            "status": self.status(now),
            "held_at": _iso(self.held_at),
            "expires_at": _iso(self.expires_at),
            "done_at": _iso(self.done_at),
            "dag_id": task.dag_id if task else None,
            "run_id": task.run_id if task else None,
            "task_id": task.task_id if task else None,
            "map_index": task.map_index if task else None,
            "message": message,
        }


@dataclass(frozen=True)
class Selection:
    """
    Which messages to list or drop: those of one connection, narrowed by any of the other fields.

    :param conn_id: the connection.
    :param user_ids: only these customers.
    :param dag_id: only those held by this DAG.
    :param run_id: only those held by this DAG run.
    :param task_id: only those held by this task.
    :param expired: also those past their expiry.
    """

    conn_id: str
    user_ids: Sequence[str] = ()
    dag_id: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    expired: bool = False

    def where(self, now: float) -> list[Any]:
        """The conditions of a query of still-held messages."""
        t = held_table.c
        conditions = [t.conn_id == self.conn_id, t.state == "held"]
        if self.user_ids:
            conditions.append(t.user_id.in_([validate_user_id(u, "user_ids") for u in self.user_ids]))
        for name in ("dag_id", "run_id", "task_id"):
            if getattr(self, name) is not None:
                conditions.append(held_table.c[name] == getattr(self, name))
        if not self.expired:
            conditions.append(t.expires_at > now)
        return conditions


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # The driver's own transaction handling off, so that every transaction begins with BEGIN
    # IMMEDIATE (below): the write lock at once, not at the first write, which two readers
    # would both reach.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_SECONDS * 1000}")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


class HeldStore:
    """
    The held messages of every connection, in one table of a SQLite or PostgreSQL database.

    .. code-block:: python

        store = HeldStore.sqlite("/var/lib/airflow/ahachat/held.sqlite3")
        store.hold([Hold(customer, "send_text", held_piece("send_text", {"text": "..."}))])
        delivered = store.deliver(customer, call="order_status")

    :param engine: the database, as a SQLAlchemy engine (see :meth:`sqlite` and :meth:`from_url`).
    :param clock: seconds since the epoch (for tests).
    """

    def __init__(self, engine: Engine, *, clock: Callable[[], float] = time.time) -> None:
        if engine.dialect.name not in DIALECTS:
            raise AhaChatValidationError(
                f"held messages: the database must be {' or '.join(DIALECTS)}, got {engine.dialect.name}"
            )
        self.engine = engine
        self.clock = clock
        self._ready = False
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"HeldStore({self.engine.url.render_as_string(hide_password=True)!r})"

    @classmethod
    def sqlite(cls, path: Any, *, clock: Callable[[], float] = time.time) -> HeldStore:
        """
        A store in the SQLite file ``path`` (its folder is created), for processes of one machine.

        :param path: the file; on a local disk (SQLite's locks do not hold on network file systems).
        :param clock: seconds since the epoch (for tests).
        """
        import pathlib

        file = pathlib.Path(path).expanduser()
        file.parent.mkdir(parents=True, exist_ok=True)
        return cls.from_url(f"sqlite:///{file}", clock=clock)

    @classmethod
    def from_url(cls, url: Any, *, clock: Callable[[], float] = time.time) -> HeldStore:
        """
        A store in the database of the SQLAlchemy URL ``url`` (``postgresql://...``, ``sqlite:///...``).

        :param url: the database's URL (a string or a SQLAlchemy ``URL``).
        :param clock: seconds since the epoch (for tests).
        """
        engine = create_engine(url, pool_pre_ping=True)
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_connect)
            event.listen(engine, "begin", _sqlite_begin)
        return cls(engine, clock=clock)

    def close(self) -> None:
        """Close the database's connections."""
        self.engine.dispose()

    # -- the table

    def _ensure_table(self) -> None:
        """Create the table and its indexes if they are not there (once per store)."""
        if self._ready:
            return
        with self._lock:
            if self._ready:
                return
            if _is_airflow_metadata(self.engine):
                raise AhaChatValidationError(
                    "held messages: the store names Airflow's metadata database, which gets no tables "
                    "from a provider; name another database ([ahachat] held_conn_id or held_path)"
                )
            try:
                _metadata.create_all(self.engine, checkfirst=True)
            except DBAPIError:  # another process created it at the same moment
                _metadata.create_all(self.engine, checkfirst=True)
            self._ready = True

    @contextlib.contextmanager
    def _begin(self) -> Iterator[Connection]:
        self._ensure_table()
        with self.engine.begin() as connection:
            yield connection

    # -- holding

    def hold(self, messages: Iterable[Hold]) -> list[int]:
        """
        Store ``messages``; one whose key is already stored is not stored again.

        :param messages: the messages, each validated (:func:`~.messages.held_piece`).
        :returns: the ID of each message, in the order given (an earlier one's for a repeated key).
        :raises AhaChatValidationError: for a bad kind or ``hold_for``, before anything is stored.
        """
        now = self.clock()
        rows = [message.row(now) for message in messages]
        if not rows:
            return []
        with self._begin() as connection:
            for start in range(0, len(rows), 500):
                connection.execute(self._insert(rows[start : start + 500]))
            keys = [row["hold_key"] for row in rows]
            ids = self._ids(connection, keys)
        self._purge(now)
        return [int(ids[key]) for key in keys]

    def _ids(self, connection: Connection, keys: list[str]) -> dict[str, int]:
        """The ID of the row of each key."""
        ids: dict[str, int] = {}
        query = select(held_table.c.hold_key, held_table.c.id)
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            ids.update(
                (key, int(id_))
                for key, id_ in connection.execute(query.where(held_table.c.hold_key.in_(chunk)))
            )
        return ids

    def _insert(self, rows: list[dict[str, Any]]) -> Any:
        """An INSERT of ``rows`` that leaves out those whose key is stored already."""
        if self.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
        return insert(held_table).values(rows).on_conflict_do_nothing(index_elements=["hold_key"])

    def _purge(self, now: float) -> None:
        """Remove the rows that expired more than :data:`KEEP_AFTER_EXPIRY` ago (never fails a hold)."""
        try:
            with self._begin() as connection:
                connection.execute(
                    held_table.delete().where(
                        held_table.c.expires_at < now - KEEP_AFTER_EXPIRY.total_seconds()
                    )
                )
        except DBAPIError as err:
            log.warning("Could not remove old held messages (they will be next time): %s", err)

    # -- delivering

    def deliver(self, customer: Customer, *, call: str, most: int = MAX_PER_ANSWER) -> list[Held]:
        """
        Take the customer's held messages that one answer can carry, oldest first, and record them
        as delivered, exactly once (see the module). Expired ones are left; bad ones are marked.

        :param customer: who calls.
        :param call: what delivers them (the event called), recorded with them.
        :param most: the most one answer carries.
        :returns: the messages to put in the answer, in order; none if nothing is held.
        """
        now = self.clock()
        try:
            chosen, bad = self._take(customer, call[:100], most, now)
        except _Taken:
            log.warning(
                "Held messages for %s were taken by another call at once: none in this answer", customer
            )
            return []
        for held in bad:
            log.error("Held message %s for %s is not valid any more: marked bad", held.id, customer.user_id)
        return [_done(held, "delivered", now, call[:100]) for held in chosen]

    def _take(self, customer: Customer, call: str, most: int, now: float) -> tuple[list[Held], list[Held]]:
        """In one transaction: lock the customer's pending messages, mark those that fit and the bad ones."""
        query = _rows_of(customer, "held", held_table.c.expires_at > now).limit(most * 2).with_for_update()
        with self._begin() as connection:
            good, bad = _checked([Held.of(row) for row in connection.execute(query)])
            chosen = [held for held, _ in good[: fits([piece for _, piece in good], most)]]
            if self._mark(connection, [held.id for held in chosen], "delivered", now, call) != len(chosen):
                raise _Taken()  # never with the lock; if a database let it happen, deliver nothing
            self._mark(connection, [held.id for held in bad], "bad", now, None)
        return chosen, bad

    def _mark(self, connection: Connection, ids: list[int], state: str, now: float, call: str | None) -> int:
        """Give the still-held messages among ``ids`` their new ``state``; how many there were."""
        if not ids:
            return 0
        done = connection.execute(
            update(held_table)
            .where(held_table.c.id.in_(ids), held_table.c.state == "held")
            .values(state=state, done_at=now, delivery=call)
        )
        return int(done.rowcount)

    def delivered(self, customer: Customer, *, call: str) -> list[Held]:
        """
        What :meth:`deliver` gave ``call`` for ``customer`` (oldest first), recording nothing: the
        answer again for a call the bot repeats (the same idempotency key) because the first answer
        did not reach it.

        :param customer: who calls.
        :param call: the call, as given to :meth:`deliver`.
        """
        query = _rows_of(customer, "delivered", held_table.c.delivery == call[:100])
        with self._begin() as connection:
            return [Held.of(row) for row in connection.execute(query)]

    # -- listing and dropping

    def select(self, selection: Selection) -> list[Held]:
        """
        The messages still held that ``selection`` names, oldest first.

        :param selection: which (of one connection).
        """
        now = self.clock()
        query = (
            select(held_table).where(*selection.where(now)).order_by(held_table.c.held_at, held_table.c.id)
        )
        with self._begin() as connection:
            return [Held.of(row) for row in connection.execute(query)]

    def drop(self, selection: Selection) -> list[Held]:
        """
        Drop the messages still held that ``selection`` names: they will never be delivered.

        :param selection: which (of one connection).
        :returns: the messages dropped, oldest first.
        """
        now = self.clock()
        query = (
            select(held_table)
            .where(*selection.where(now))
            .order_by(held_table.c.held_at, held_table.c.id)
            .with_for_update()
        )
        with self._begin() as connection:
            found = [Held.of(row) for row in connection.execute(query)]
            self._mark(connection, [held.id for held in found], "dropped", now, None)
        return [_done(held, "dropped", now, None) for held in found]


def _is_airflow_metadata(engine: Engine) -> bool:
    """
    Whether ``engine`` is an Airflow metadata database: its own tables are there. Checked by the
    store itself, because a task process is not told the metadata database's address.
    """
    from sqlalchemy import inspect

    tables = set(inspect(engine).get_table_names())
    return {"alembic_version", "dag_run", "task_instance"} <= tables


def _rows_of(customer: Customer, state: str, *more: Any) -> Select[Any]:
    """The customer's messages in ``state`` (and ``more`` conditions), oldest first."""
    t = held_table.c
    return (
        select(held_table)
        .where(
            t.conn_id == customer.conn_id,
            t.bot_id == customer.bot_id,
            t.user_id == customer.user_id,
            t.state == state,
            *more,
        )
        .order_by(t.held_at, t.id)
    )


class _Taken(Exception):
    """Another transaction took some of the messages this one read (rolls this one back)."""


def _checked(found: list[Held]) -> tuple[list[tuple[Held, Piece]], list[Held]]:
    """The messages that still pass the rules, with their pieces, and those that do not."""
    good: list[tuple[Held, Piece]] = []
    bad: list[Held] = []
    for held in found:
        try:
            good.append((held, held.piece()))
        except AhaChatValidationError:
            bad.append(held)
    return good, bad


def _done(held: Held, state: str, now: float, call: str | None) -> Held:
    return replace(held, state=state, done_at=now, delivery=call)
