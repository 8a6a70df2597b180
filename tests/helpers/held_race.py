"""
Two processes deliver the same customer's held messages at the same moment, trial after trial.

Each of two worker processes (started with ``spawn``, each with its own :class:`HeldStore` on the
same database) waits for a trial, meets the other at a barrier, and delivers. The parent holds the
trial's messages for a new customer first, then reads both answers and checks them: no message in
both (``doubled``), none in neither (``lost``), each answer in order. It also counts the trials whose
two deliveries overlapped in time (``overlapped``: both were in the database at once), so that a run
says how often the race was really run.

``naive=True`` delivers the way a store without a lock would (read, then mark, in two transactions):
the control that shows the check finds a double delivery when there is one.

Used by ``tests/integration/test_held_race.py`` and ``benchmarks/held_delivery.py``.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import create_engine, select, update
from sqlalchemy.engine import Engine

from airflow_provider_ahachat.held.messages import held_piece
from airflow_provider_ahachat.held.store import Customer, HeldStore, Hold, held_table

CONN_ID = "race_bot"
BOT_ID = "12404829"
#: The first customer's ID; trial ``i`` is customer ``FIRST_USER + i``.
FIRST_USER = 7_100_000_000_000_000


@dataclass
class RaceResult:
    """What the trials found."""

    database: str
    mode: str
    trials: int
    held_each: int
    doubled: int = 0
    lost: int = 0
    out_of_order: int = 0
    overlapped: int = 0
    split: int = 0
    seconds: float = 0.0
    bad_trials: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        found = asdict(self)
        found["bad_trials"] = found["bad_trials"][:20]
        return found


def naive_deliver(engine: Engine, customer: Customer) -> list[int]:
    """Deliver without a lock: read what is held, then mark it, in two transactions."""
    t = held_table.c
    query = (
        select(t.id)
        .where(t.conn_id == customer.conn_id, t.user_id == customer.user_id, t.state == "held")
        .order_by(t.held_at, t.id)
    )
    with engine.connect() as connection:
        found = [int(row.id) for row in connection.execute(query)]
    if found:
        with engine.begin() as connection:
            connection.execute(update(held_table).where(t.id.in_(found)).values(state="delivered"))
    return found


def _worker(url: str, commands: Any, results: Any, barrier: Any, naive: bool) -> None:
    store = HeldStore.from_url(url)
    naive_engine = create_engine(url)  # the driver's own transactions: no lock taken before reading
    warm = Customer(CONN_ID, BOT_ID, "1")
    store.deliver(warm, call="warm-up")
    naive_deliver(naive_engine, warm)
    try:
        while True:
            job = commands.get()
            if job is None:
                return
            trial, user_id = job
            customer = Customer(CONN_ID, BOT_ID, user_id)
            barrier.wait(60)
            began = time.monotonic()
            if naive:
                got = naive_deliver(naive_engine, customer)
            else:
                got = [h.id for h in store.deliver(customer, call=f"trial-{trial}")]
            ended = time.monotonic()
            results.put((trial, os.getpid(), got, began, ended))
    finally:
        store.close()
        naive_engine.dispose()


def _check(
    result: RaceResult, trial: int, held: list[int], answers: list[tuple[list[int], float, float]]
) -> None:
    (first, began_a, ended_a), (second, began_b, ended_b) = answers
    doubled = set(first) & set(second)
    lost = set(held) - set(first) - set(second)
    result.doubled += len(doubled)
    result.lost += len(lost)
    result.out_of_order += sum(ids != sorted(ids) for ids in (first, second))
    result.overlapped += began_a < ended_b and began_b < ended_a
    result.split += bool(first) and bool(second)
    if doubled or lost:
        result.bad_trials.append(trial)


def race(url: str, trials: int, held: int = 3, *, naive: bool = False, database: str = "") -> RaceResult:
    """
    Run ``trials`` trials on the database at ``url`` (the table is created if needed).

    :param url: a SQLAlchemy URL.
    :param trials: how many trials.
    :param held: text messages held for each trial's customer (all fit in one answer).
    :param naive: deliver without a lock (the control).
    :param database: the database's name in the result.
    """
    context = multiprocessing.get_context("spawn")
    store = HeldStore.from_url(url)
    commands = [context.Queue(), context.Queue()]
    results: Any = context.Queue()
    barrier = context.Barrier(2)
    workers = [
        context.Process(target=_worker, args=(url, commands[i], results, barrier, naive), daemon=True)
        for i in range(2)
    ]
    outcome = RaceResult(database or store.engine.dialect.name, "naive" if naive else "store", trials, held)
    for worker in workers:
        worker.start()
    began = time.monotonic()
    try:
        for trial in range(trials):
            user_id = str(FIRST_USER + trial)
            customer = Customer(CONN_ID, BOT_ID, user_id)
            pieces = [held_piece("send_text", {"text": f"trial {trial}, message {n}"}) for n in range(held)]
            ids = store.hold([Hold(customer, "send_text", piece) for piece in pieces])
            for command in commands:
                command.put((trial, user_id))
            answers = [_answer(results, workers) for _ in range(2)]
            _check(outcome, trial, ids, answers)
    finally:
        for command in commands:
            command.put(None)
        for worker in workers:
            worker.join(30)
            if worker.is_alive():
                worker.kill()
        store.close()
    outcome.seconds = round(time.monotonic() - began, 2)
    return outcome


def _answer(results: Any, workers: list[Any]) -> tuple[list[int], float, float]:
    while True:
        try:
            _trial, _pid, ids, began, ended = results.get(timeout=5)
            return ids, began, ended
        except queue.Empty:
            dead = [w for w in workers if not w.is_alive()]
            if dead:
                raise RuntimeError(f"a racing process died (exit code {dead[0].exitcode})") from None
