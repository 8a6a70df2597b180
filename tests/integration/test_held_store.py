"""
The store of held messages, on SQLite (one machine) and PostgreSQL (a database the user names):
what is stored, in what order it is delivered, expiry at its boundary, isolation between customers,
bots and connections, held once per key, bad stored data, listing and dropping, and a restart.
Each test reads the table itself as well as what the store answers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, insert, select
from sqlalchemy.engine import Engine

from airflow_provider_ahachat.exceptions import AhaChatValidationError
from airflow_provider_ahachat.held.answer import MAX_PER_ANSWER, build_answer
from airflow_provider_ahachat.held.messages import Piece, held_piece
from airflow_provider_ahachat.held.store import (
    KEEP_AFTER_EXPIRY,
    Customer,
    HeldStore,
    Hold,
    Selection,
    TaskRef,
    held_table,
)

NOW = 1_796_000_000.0  # December 2026
DAY = 86_400.0
CONN = "ahachat_default"
BOT = "12404829"
LAN = Customer(CONN, BOT, "3824547807572463")
MINH = Customer(CONN, BOT, "3824547807572464")
RUN_A = TaskRef("shipping", "scheduled__2026-12-01", "notify", -1)
RUN_B = TaskRef("shipping", "scheduled__2026-12-02", "notify", 3)
OTHER_TASK = TaskRef("promos", "manual__1", "announce", -1)


class Clock:
    """The store's clock, set by the test."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'held.sqlite3'}"
    postgres = request.getfixturevalue("postgres")
    return f"postgresql+psycopg2://postgres@127.0.0.1:{postgres.port}/{postgres.new_database()}"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(url: str, clock: Clock) -> Iterator[HeldStore]:
    held = HeldStore.from_url(url, clock=clock)
    yield held
    held.close()


def text(value: str) -> Piece:
    return held_piece("send_text", {"text": value})


def hold(
    store: HeldStore, customer: Customer, *texts: str, task: TaskRef | None = None, **more: Any
) -> list[int]:
    return store.hold([Hold(customer, "send_text", text(t), task=task, **more) for t in texts])


def shown(delivered: list[Any]) -> list[Any]:
    """What the customer sees: the messages' texts (and blocks) of one answer."""
    answer = build_answer([h.piece() for h in delivered])
    return [m.get("text") for m in answer.get("messages", [])] + answer.get("redirect_to_blocks", [])


def rows(store: HeldStore) -> list[dict[str, Any]]:
    with store.engine.connect() as connection:
        return [dict(r._mapping) for r in connection.execute(select(held_table).order_by(held_table.c.id))]


# --------------------------------------------------------------------------- holding


def test_a_held_message_is_stored_as_validated_with_its_task_and_expiry(store: HeldStore) -> None:
    [first] = hold(store, LAN, "Đơn DH10231 đã gửi, mã GHN8123456VN", task=RUN_B, hold_for=3 * DAY)
    [row] = rows(store)
    assert row["id"] == first
    assert (row["conn_id"], row["bot_id"], row["user_id"], row["kind"]) == (
        CONN,
        BOT,
        LAN.user_id,
        "send_text",
    )
    assert json.loads(row["body"]) == {"messages": [{"text": "Đơn DH10231 đã gửi, mã GHN8123456VN"}]}
    assert (row["held_at"], row["expires_at"]) == (NOW, NOW + 3 * DAY)
    assert (row["dag_id"], row["run_id"], row["task_id"], row["map_index"]) == (
        "shipping",
        "scheduled__2026-12-02",
        "notify",
        3,
    )
    assert row["state"] == "held"
    assert row["done_at"] is None


def test_seven_days_by_default(store: HeldStore) -> None:
    hold(store, LAN, "a")
    assert rows(store)[0]["expires_at"] == NOW + 7 * DAY


def test_a_message_held_again_with_its_key_is_stored_once(store: HeldStore) -> None:
    key = f"{RUN_A}/{LAN.user_id}"
    first = hold(store, LAN, "a", key=key)
    again = hold(store, LAN, "a, held by a retry", key=key)
    others = hold(store, LAN, "b", "c")
    assert again == first
    assert len(set(first + others)) == 3
    assert [json.loads(r["body"])["messages"][0]["text"] for r in rows(store)] == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("message", "named"),
    [
        ({"kind": "add_tags"}, "kind: 'add_tags' cannot be held"),
        ({"hold_for": 0}, "hold_for"),
        ({"hold_for": 91 * DAY}, "hold_for"),
    ],
)
def test_nothing_of_a_batch_is_stored_when_one_message_is_bad(
    store: HeldStore, message: dict[str, Any], named: str
) -> None:
    good = Hold(LAN, "send_text", text("fine"))
    bad = Hold(**{"customer": MINH, "kind": "send_text", "piece": text("bad"), **message})
    with pytest.raises(AhaChatValidationError, match=named):
        store.hold([good, bad])
    hold(store, LAN, "later")  # the table exists: nothing of the batch is in it
    assert [json.loads(r["body"])["messages"][0]["text"] for r in rows(store)] == ["later"]


def test_a_customer_is_checked_before_anything_is_held() -> None:
    with pytest.raises(AhaChatValidationError) as caught:
        Customer.of("", "bot", "38.5")
    assert len(caught.value.problems) == 3
    assert Customer.of(CONN, BOT, 3824547807572463) == LAN


# --------------------------------------------------------------------------- delivering


def test_a_customers_messages_from_several_runs_and_kinds_come_oldest_first_once(
    store: HeldStore, clock: Clock
) -> None:
    hold(store, LAN, "run A: 1", task=RUN_A)
    clock.now += 1
    hold(store, LAN, "promo", task=OTHER_TASK)
    clock.now += 1
    store.hold(
        [
            Hold(
                LAN,
                "send_message",
                held_piece("send_message", {"message": {"text": "run B: gallery"}}),
                task=RUN_B,
            ),
            Hold(
                LAN,
                "broadcast_block",
                held_piece("broadcast_block", {"block_name": "ship", "attributes": {"o": "1"}}),
            ),
            Hold(LAN, "send_text", text("after the block"), task=RUN_B),
        ]
    )
    clock.now += 60
    first = store.deliver(LAN, call="order_status")
    assert shown(first) == ["run A: 1", "promo", "run B: gallery", "ship"]
    assert build_answer([h.piece() for h in first])["set_attributes"] == {"o": "1"}
    assert [h.state for h in first] == ["delivered"] * 4
    second = store.deliver(LAN, call="_held")
    assert shown(second) == ["after the block"]
    assert store.deliver(LAN, call="_held") == []
    by_id = {r["id"]: r for r in rows(store)}
    assert [by_id[h.id]["delivery"] for h in first + second] == ["order_status"] * 4 + ["_held"]
    assert all(r["state"] == "delivered" and r["done_at"] == clock.now for r in by_id.values())


def test_order_is_the_time_held_not_the_order_stored(store: HeldStore, clock: Clock) -> None:
    clock.now = NOW + 10
    hold(store, LAN, "held later, stored first")
    clock.now = NOW
    hold(store, LAN, "held first, stored later")
    assert shown(store.deliver(LAN, call="e")) == ["held first, stored later", "held later, stored first"]


def test_at_most_one_answers_worth_at_a_time(store: HeldStore) -> None:
    hold(store, LAN, *[f"m{i}" for i in range(MAX_PER_ANSWER + 3)])
    first = store.deliver(LAN, call="e")
    assert shown(first) == [f"m{i}" for i in range(MAX_PER_ANSWER)]
    assert shown(store.deliver(LAN, call="e")) == [f"m{i}" for i in range(MAX_PER_ANSWER, MAX_PER_ANSWER + 3)]


@pytest.mark.parametrize(
    ("after", "delivered"),
    [(-0.001, True), (0.0, False), (0.001, False), (DAY, False)],
    ids=["just-before", "at-expiry", "just-after", "a-day-after"],
)
def test_a_message_is_delivered_only_before_its_expiry(
    store: HeldStore, clock: Clock, after: float, delivered: bool
) -> None:
    hold(store, LAN, "expires", hold_for=2 * DAY)
    hold(store, LAN, "stays", hold_for=5 * DAY)
    clock.now = NOW + 2 * DAY + after
    assert shown(store.deliver(LAN, call="e")) == (["expires", "stays"] if delivered else ["stays"])
    states = {json.loads(r["body"])["messages"][0]["text"]: r["state"] for r in rows(store)}
    assert states == {"expires": "delivered" if delivered else "held", "stays": "delivered"}
    clock.now = NOW + 3 * DAY
    assert store.deliver(LAN, call="e") == []  # an expired message is never delivered later either
    listed = store.select(Selection(CONN, expired=True))
    assert [h.status(clock.now) for h in listed] == ([] if delivered else ["expired"])


def test_a_customers_messages_never_go_to_anyone_else(store: HeldStore) -> None:
    hold(store, LAN, "for Lan")
    strangers = [
        MINH,  # one digit apart
        Customer(CONN, BOT, LAN.user_id[:-1]),  # a prefix of her ID
        Customer(CONN, BOT, LAN.user_id + "0"),
        Customer(CONN, "99999999", LAN.user_id),  # her ID on another bot
        Customer("other_conn", BOT, LAN.user_id),  # her ID through another connection
    ]
    for stranger in strangers:
        assert store.deliver(stranger, call="e") == []
    assert [r["state"] for r in rows(store)] == ["held"]
    assert shown(store.deliver(LAN, call="e")) == ["for Lan"]


def test_bad_stored_data_is_never_delivered_and_holds_nothing_back(store: HeldStore, clock: Clock) -> None:
    hold(store, LAN, "first")
    base = {"conn_id": CONN, "bot_id": BOT, "user_id": LAN.user_id, "expires_at": NOW + DAY, "state": "held"}
    bad = [
        {"kind": "send_text", "body": "{not json"},
        {"kind": "send_text", "body": '{"messages": [{"text": ""}]}'},
        {"kind": "teleport", "body": '{"messages": [{"text": "unknown kind"}]}'},
        {"kind": "broadcast_block", "body": '{"redirect_to_blocks": [""], "set_attributes": {}}'},
    ]
    with store.engine.begin() as connection:
        for i, row in enumerate(bad):
            connection.execute(
                insert(held_table).values(**base, **row, held_at=NOW + 1 + i, hold_key=f"bad{i}")
            )
    clock.now += 10
    hold(store, LAN, "last")
    assert shown(store.deliver(LAN, call="e")) == ["first", "last"]
    states = [r["state"] for r in rows(store)]
    assert states == ["delivered", "bad", "bad", "bad", "bad", "delivered"]
    assert store.deliver(LAN, call="e") == []


# --------------------------------------------------------------------------- listing and dropping


def test_listing_narrows_by_customer_dag_run_and_task(store: HeldStore, clock: Clock) -> None:
    hold(store, LAN, "A1", task=RUN_A)
    hold(store, MINH, "A2", task=RUN_A)
    hold(store, LAN, "B1", task=RUN_B)
    hold(store, LAN, "promo", task=OTHER_TASK)
    store.hold([Hold(Customer("other_conn", BOT, LAN.user_id), "send_text", text("elsewhere"))])

    def listed(**narrow: Any) -> list[str]:
        return [h.piece().messages[0]["text"] for h in store.select(Selection(CONN, **narrow))]

    assert listed() == ["A1", "A2", "B1", "promo"]
    assert listed(user_ids=[LAN.user_id]) == ["A1", "B1", "promo"]
    assert listed(dag_id="shipping") == ["A1", "A2", "B1"]
    assert listed(dag_id="shipping", run_id=RUN_A.run_id) == ["A1", "A2"]
    assert listed(task_id="announce") == ["promo"]
    assert listed(user_ids=["1"]) == []
    entry = store.select(Selection(CONN, task_id="notify", run_id=RUN_B.run_id))[0].to_json(clock.now)
    assert entry["messenger_user_id"] == LAN.user_id
    assert entry["status"] == "held"
    assert entry["message"] == {"messages": [{"text": "B1"}]}
    assert (entry["dag_id"], entry["run_id"], entry["task_id"], entry["map_index"]) == (
        "shipping",
        "scheduled__2026-12-02",
        "notify",
        3,
    )
    assert (entry["held_at"], entry["expires_at"]) == (
        "2026-11-30T00:53:20+00:00",
        "2026-12-07T00:53:20+00:00",
    )
    with pytest.raises(AhaChatValidationError, match="user_ids"):
        store.select(Selection(CONN, user_ids=["not-an-id"]))


def test_dropped_messages_are_never_delivered_and_others_stay(store: HeldStore, clock: Clock) -> None:
    hold(store, LAN, "A1", task=RUN_A)
    hold(store, LAN, "promo", task=OTHER_TASK)
    hold(store, MINH, "A2", task=RUN_A)
    store.hold([Hold(Customer("other_conn", BOT, LAN.user_id), "send_text", text("elsewhere"), task=RUN_A)])
    dropped = store.drop(Selection(CONN, dag_id=RUN_A.dag_id))
    assert [h.piece().messages[0]["text"] for h in dropped] == ["A1", "A2"]
    assert {h.state for h in dropped} == {"dropped"}
    assert shown(store.deliver(LAN, call="e")) == ["promo"]
    assert store.deliver(MINH, call="e") == []
    assert shown(store.deliver(Customer("other_conn", BOT, LAN.user_id), call="e")) == ["elsewhere"]
    assert store.drop(Selection(CONN)) == []  # delivered and dropped ones are not dropped again
    assert [r["state"] for r in rows(store)] == ["dropped", "delivered", "dropped", "delivered"]


def test_expired_messages_are_listed_and_dropped_only_when_asked(store: HeldStore, clock: Clock) -> None:
    hold(store, LAN, "short", hold_for=60)
    hold(store, LAN, "long")
    clock.now += 61
    assert [h.piece().messages[0]["text"] for h in store.select(Selection(CONN))] == ["long"]
    assert [h.status(clock.now) for h in store.select(Selection(CONN, expired=True))] == ["expired", "held"]
    assert [h.id for h in store.drop(Selection(CONN, expired=True))] == [r["id"] for r in rows(store)]


# --------------------------------------------------------------------------- the table's life


def test_held_messages_survive_a_restart(url: str, clock: Clock) -> None:
    before = HeldStore.from_url(url, clock=clock)
    hold(before, LAN, "before the restart")
    before.close()
    after = HeldStore.from_url(url, clock=clock)
    try:
        assert shown(after.deliver(LAN, call="e")) == ["before the restart"]
    finally:
        after.close()


def test_rows_are_removed_a_while_after_their_expiry(store: HeldStore, clock: Clock) -> None:
    hold(store, LAN, "old", hold_for=DAY)
    hold(store, MINH, "recent", hold_for=10 * DAY)
    clock.now = NOW + DAY + KEEP_AFTER_EXPIRY.total_seconds() - 1
    hold(store, MINH, "newer")
    assert len(rows(store)) == 3
    clock.now += 2
    hold(store, MINH, "newest")
    assert [json.loads(r["body"])["messages"][0]["text"] for r in rows(store)] == [
        "recent",
        "newer",
        "newest",
    ]


def test_only_sqlite_and_postgresql(tmp_path: Path) -> None:
    from sqlalchemy import create_mock_engine

    engine: Any = create_mock_engine("mysql+pymysql://u@h/db", lambda *a, **k: None)
    with pytest.raises(AhaChatValidationError, match="must be sqlite or postgresql, got mysql"):
        HeldStore(engine)
    made: Engine = create_engine(f"sqlite:///{tmp_path / 'x.sqlite3'}")
    assert HeldStore(made).engine is made


def test_a_sqlite_store_makes_its_folder_and_hides_no_password_in_its_repr(tmp_path: Path) -> None:
    store = HeldStore.sqlite(tmp_path / "deep" / "er" / "held.sqlite3")
    try:
        hold(store, LAN, "a")
        assert (tmp_path / "deep" / "er" / "held.sqlite3").exists()
    finally:
        store.close()
    remote = HeldStore.from_url("postgresql+psycopg2://user:s3cr3t-pw@127.0.0.1:1/db")
    assert "s3cr3t-pw" not in repr(remote)


def test_a_repeated_call_gets_the_same_messages_again_without_a_second_delivery(store: HeldStore) -> None:
    hold(store, LAN, "a", "b")
    first = store.deliver(LAN, call="order_status key-1")
    hold(store, LAN, "held after the first answer")
    again = store.delivered(LAN, call="order_status key-1")
    assert [h.id for h in again] == [h.id for h in first]
    assert shown(again) == ["a", "b"]
    assert store.delivered(LAN, call="order_status key-2") == []
    assert store.delivered(MINH, call="order_status key-1") == []
    assert [r["state"] for r in rows(store)] == ["delivered", "delivered", "held"]
    assert [r["delivery"] for r in rows(store)] == ["order_status key-1"] * 2 + [None]
