"""
The tasks that list and drop held messages, run inside Airflow on the store its configuration names
(a SQLite file here): what each task returns, and what is left in the store after it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_ahachat.held.messages import held_piece
from airflow_provider_ahachat.held.store import Customer, HeldStore, Hold, Selection, TaskRef

CONN = "aha"
BOT = "12404829"
LAN = Customer(CONN, BOT, "3824547807572463")
MINH = Customer(CONN, BOT, "3824547807572464")
ELSEWHERE = Customer("other", BOT, "3824547807572463")
SHIPPING = TaskRef("shipping", "scheduled__2026-12-01", "notify", -1)
PROMO = TaskRef("promos", "manual__1", "announce", 2)


def fill(path: Path) -> HeldStore:
    store = HeldStore.sqlite(path)
    text = held_piece("send_text", {"text": "Đơn DH10231 đã giao cho GHN"})
    block = held_piece("broadcast_block", {"block_name": "khuyen_mai", "attributes": {"ma": "KM12"}})
    store.hold(
        [
            Hold(LAN, "send_text", text, task=SHIPPING),
            Hold(MINH, "send_text", text, task=SHIPPING),
            Hold(LAN, "broadcast_block", block, task=PROMO),
            Hold(ELSEWHERE, "send_text", text, task=SHIPPING),
            Hold(MINH, "send_text", held_piece("send_text", {"text": "short"}), hold_for=0.001),
        ]
    )
    return store


def left(store: HeldStore, conn_id: str = CONN) -> list[tuple[str, str]]:
    return [(h.customer.user_id, h.kind) for h in store.select(Selection(conn_id))]


def run(dag_runner: Callable[..., Any], dag: Any, path: Path) -> Any:
    return dag_runner(dag, {}, env={"AIRFLOW__AHACHAT__HELD_PATH": str(path)})


def test_listing_tasks_return_what_waits_narrowed_and_leave_it(
    dag_runner: Callable[..., Any], tmp_path: Path
) -> None:
    from airflow.sdk import DAG

    from airflow_provider_ahachat.operators.held import ListHeldMessagesOperator

    path = tmp_path / "held.sqlite3"
    store = fill(path)
    with DAG("held_list", schedule=None, params={"lan": LAN.user_id}) as dag:
        ListHeldMessagesOperator(task_id="all", ahachat_conn_id=CONN)
        ListHeldMessagesOperator(task_id="lan", ahachat_conn_id=CONN, user_ids="{{ params.lan }}")
        ListHeldMessagesOperator(task_id="shipping", ahachat_conn_id=CONN, held_by_dag_id="shipping")
        ListHeldMessagesOperator(task_id="expired", ahachat_conn_id=CONN, include_expired=True)
        ListHeldMessagesOperator(task_id="bad_id", ahachat_conn_id=CONN, user_ids=["38245.5"])
    result = run(dag_runner, dag, path)

    def who(task: str) -> list[tuple[str, str, str]]:
        return [(e["messenger_user_id"], e["kind"], e["status"]) for e in result.xcoms[task]]

    assert who("all") == [
        (LAN.user_id, "send_text", "held"),
        (MINH.user_id, "send_text", "held"),
        (LAN.user_id, "broadcast_block", "held"),
    ]
    assert who("lan") == [(LAN.user_id, "send_text", "held"), (LAN.user_id, "broadcast_block", "held")]
    assert [e["task_id"] for e in result.xcoms["shipping"]] == ["notify", "notify"]
    assert who("expired")[-1] == (MINH.user_id, "send_text", "expired")
    promo = result.xcoms["lan"][1]
    assert promo["message"] == {"set_attributes": {"ma": "KM12"}, "redirect_to_blocks": ["khuyen_mai"]}
    assert (promo["dag_id"], promo["run_id"], promo["task_id"], promo["map_index"]) == (
        "promos",
        "manual__1",
        "announce",
        2,
    )
    assert result.task_states["bad_id"] == "failed"
    assert "user_ids[0]" in (result.tasks["bad_id"].error_text or "")
    assert "3 message(s) held for 2 customer(s) of connection aha" in result.tasks["all"].log
    assert len(left(store)) == 3  # listing drops nothing


def test_dropping_tasks_drop_what_they_name_and_nothing_else(
    dag_runner: Callable[..., Any], tmp_path: Path
) -> None:
    from airflow.sdk import DAG

    from airflow_provider_ahachat.operators.held import DropHeldMessagesOperator

    path = tmp_path / "held.sqlite3"
    store = fill(path)
    with DAG("held_drop", schedule=None) as dag:
        unnarrowed = DropHeldMessagesOperator(task_id="unnarrowed", ahachat_conn_id=CONN)
        promo = DropHeldMessagesOperator(task_id="promo", ahachat_conn_id=CONN, held_by_task_id="announce")
        unnarrowed >> promo
    result = run(dag_runner, dag, path)
    assert result.task_states == {"unnarrowed": "failed", "promo": "upstream_failed"}
    assert "give at least one, or everything=True" in (result.tasks["unnarrowed"].error_text or "")
    assert len(left(store)) == 3

    with DAG("held_drop_2", schedule=None) as dag:
        DropHeldMessagesOperator(task_id="promo", ahachat_conn_id=CONN, held_by_task_id="announce")
    result = run(dag_runner, dag, path)
    assert [(e["messenger_user_id"], e["kind"], e["status"]) for e in result.xcoms["promo"]] == [
        (LAN.user_id, "broadcast_block", "dropped")
    ]
    assert left(store) == [(LAN.user_id, "send_text"), (MINH.user_id, "send_text")]
    assert store.deliver(LAN, call="e")[0].kind == "send_text"  # the dropped broadcast never comes

    with DAG("held_drop_all", schedule=None) as dag:
        DropHeldMessagesOperator(task_id="all", ahachat_conn_id=CONN, everything=True)
    result = run(dag_runner, dag, path)
    assert [e["messenger_user_id"] for e in result.xcoms["all"]] == [MINH.user_id]
    assert left(store) == []
    assert left(store, "other") == [(ELSEWHERE.user_id, "send_text")]  # another connection's stay


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, ()),
        ("", ()),
        ("3824547807572463", ("3824547807572463",)),
        (3824547807572463, ("3824547807572463",)),
        ('["1", 2]', ("1", "2")),
        (["1", "2"], ("1", "2")),
    ],
)
def test_user_ids_take_one_id_a_list_or_a_rendered_json_list(given: Any, expected: tuple[str, ...]) -> None:
    from airflow_provider_ahachat.operators.held import _user_ids

    assert _user_ids(given) == expected
