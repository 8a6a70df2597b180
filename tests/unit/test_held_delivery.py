"""
The two ends of a held message as the operators and the receiver use them: the key a task holds
under (the same in every try), the answer to a call (acknowledgement first, then the held messages,
once), and the asset event that records a delivery in the shape of every bot event.
"""

from __future__ import annotations

import json
from pathlib import Path

from airflow_provider_ahachat.events import customer_events, recipients_from_events
from airflow_provider_ahachat.held.answer import answer_keys
from airflow_provider_ahachat.held.delivery import answer_with_held, delivered_extra, hold_key
from airflow_provider_ahachat.held.messages import held_piece
from airflow_provider_ahachat.held.store import Customer, HeldStore, Hold, TaskRef
from airflow_provider_ahachat.inbound.intake import check_json

LAN = Customer("aha", "12404829", "3824547807572463")
TASK = TaskRef("shipping", "scheduled__2026-12-01", "notify", -1)
NOW = 1_796_000_000.0


def test_a_task_holds_under_the_same_key_in_every_try_and_a_key_of_its_own() -> None:
    key = hold_key(TASK, "send_text", LAN.user_id)
    assert key == hold_key(
        TaskRef("shipping", "scheduled__2026-12-01", "notify", -1), "send_text", LAN.user_id
    )
    others = {
        hold_key(TaskRef("shipping", "scheduled__2026-12-02", "notify", -1), "send_text", LAN.user_id),
        hold_key(TaskRef("shipping", "scheduled__2026-12-01", "notify", 0), "send_text", LAN.user_id),
        hold_key(TaskRef("shipping", "scheduled__2026-12-01", "notify2", -1), "send_text", LAN.user_id),
        hold_key(TASK, "broadcast_block", LAN.user_id),
        hold_key(TASK, "send_text", "3824547807572464"),
        # Parts that would run together if joined by a separator.
        hold_key(TaskRef("shipping/x", "scheduled__2026-12-01", "notify", -1), "send_text", LAN.user_id),
        hold_key(TaskRef("shipping", "x/scheduled__2026-12-01", "notify", -1), "send_text", LAN.user_id),
    }
    assert key not in others
    assert len(others) == 7


def test_a_call_is_answered_with_its_acknowledgement_then_the_held_messages_once(tmp_path: Path) -> None:
    store = HeldStore.sqlite(tmp_path / "held.sqlite3", clock=lambda: NOW)
    store.hold(
        [
            Hold(LAN, "send_text", held_piece("send_text", {"text": "Đơn DH10231 đã giao"}), task=TASK),
            Hold(LAN, "broadcast_block", held_piece("broadcast_block", {"block_name": "danh_gia"})),
        ]
    )
    keys = answer_keys({"redirect_to_blocks": "redirect_to_block"})
    answer, delivered = answer_with_held(
        store, LAN, call="order_status", first=[{"text": "Đã nhận"}], keys=keys
    )
    assert answer == {
        "messages": [{"text": "Đã nhận"}, {"text": "Đơn DH10231 đã giao"}],
        "redirect_to_block": ["danh_gia"],
    }
    assert [h.kind for h in delivered] == ["send_text", "broadcast_block"]
    again, none = answer_with_held(store, LAN, call="order_status", first=[{"text": "Đã nhận"}])
    assert (again, none) == ({"messages": [{"text": "Đã nhận"}]}, [])
    assert answer_with_held(store, LAN, call="_held") == ({}, [])

    extra = delivered_extra(LAN, delivered, call="order_status", now=NOW)
    check_json(extra)  # what the receiver checks before any event is recorded
    assert extra["event"] == "held_delivered"
    assert (extra["messenger_user_id"], extra["conn_id"], extra["bot_id"]) == (LAN.user_id, "aha", "12404829")
    assert extra["fields"]["during"] == "order_status"
    first = extra["fields"]["messages"][0]
    assert first == {
        "id": delivered[0].id,
        "kind": "send_text",
        "held_at": "2026-11-30T00:53:20+00:00",
        "expires_at": "2026-12-07T00:53:20+00:00",
        "done_at": "2026-11-30T00:53:20+00:00",
        "dag_id": "shipping",
        "run_id": "scheduled__2026-12-01",
        "task_id": "notify",
        "map_index": -1,
    }
    assert "Đơn" not in json.dumps(extra, ensure_ascii=False)  # the event names messages, not their text
    event = {"asset": {"uri": "ahachat://aha/held_delivered"}, "extra": extra}
    assert customer_events([event], event="held_delivered") == [extra]
    assert recipients_from_events([event]) == [{"user_id": LAN.user_id}]
