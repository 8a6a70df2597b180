"""
Held messages delivered by the webhook receiver over real HTTP (uvicorn on loopback): the plugin's
own functions behind it (connections from ``AIRFLOW_CONN_*``, events into Airflow's metadata DB, the
store ``[ahachat] held_path`` names), and the sandbox's JSON API step calling it as AhaChat would.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from helpers.app_server import AppServer
from helpers.webhook_helpers import clear_events, conn_json, recorded, sync_consumer

from airflow_provider_ahachat.held.delivery import Holder
from airflow_provider_ahachat.held.store import HeldStore, TaskRef
from airflow_provider_ahachat.inbound.receiver import SECRET_HEADER, create_receiver_app
from airflow_provider_ahachat.sandbox import SandboxServer

SECRET = "whsec-held-4b1e90-NEVER-SHOWN"
TOKEN = "tok-held-NEVER-SHOWN"
CONN = "aha_held"
BOT_ID = "12404829"
LAN = "3824547807572463"
MINH = "4102938475610293"
ACK = "Đang tra cứu đơn hàng…"
TASK = TaskRef("shipping", "scheduled__2026-12-01", "notify", -1)


@pytest.fixture(scope="module")
def consumer_dag(airflow_db: Any) -> str:
    """A DAG on one event and on held_delivered, so that their assets exist (none on ``_held``)."""
    return sync_consumer("t_held_consumer", ("order_status", "held_delivered"), CONN)


@pytest.fixture(scope="module")
def receiver(consumer_dag: str) -> Iterator[str]:
    from airflow_provider_ahachat.inbound import airflow_internals
    from airflow_provider_ahachat.inbound.plugin import deliver_held, load_webhook_settings

    app = create_receiver_app(
        load_settings=load_webhook_settings,
        record=airflow_internals.record_asset_event,
        cache_seconds=0,
        deliver_held=deliver_held,
    )
    with pytest.MonkeyPatch.context() as patch, AppServer(app) as server:
        patch.setattr(airflow_internals.follow_up, "watch", lambda asset_id, dag_ids: None)
        yield server.url


@pytest.fixture
def held_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, receiver: str) -> Path:
    """The store's file for this test (not created), and the connection with a secret."""
    path = tmp_path / "store" / "held.sqlite3"
    monkeypatch.setenv("AIRFLOW__AHACHAT__HELD_PATH", str(path))
    monkeypatch.setenv("AIRFLOW_CONN_AHA_HELD", conn(webhook_replies={"order_status": ACK}))
    clear_events()
    return path


def conn(**extra: Any) -> str:
    fields = json.loads(conn_json(webhook_secret=SECRET, **extra))
    return json.dumps({**fields, "password": TOKEN}, ensure_ascii=False)


def holder(path: Path, action: str, arguments: dict[str, Any], **more: Any) -> Holder:
    more.setdefault("task", TASK)
    return Holder.of(
        HeldStore.sqlite(path), conn_id=CONN, bot_id=BOT_ID, action=action, arguments=arguments,
        hold_for=more.pop("hold_for", None), **more,
    )  # fmt: skip


def hold_three_for_lan_and_one_for_minh(path: Path, block: str = "danh_gia", name: str = "ma_don") -> None:
    holder(path, "send_text", {"text": "Đơn DH10231 đã gửi, mã vận đơn GHN8123456VN"}).hold(LAN, "a")
    holder(path, "send_text", {"text": "Anh Minh ơi, đơn DH10240 đã gửi"}).hold(MINH, "b")
    dynamic = [
        {"text": "Xem hành trình"},
        {"attachment": {"type": "image", "payload": {"url": "https://x.vn/a.png"}}},
    ]
    holder(path, "send_message", {"message": dynamic}).hold(LAN, "c")
    holder(path, "broadcast_block", {"block_name": block, "attributes": {name: "DH10231"}}).hold(
        LAN, "d", {"sao": 5}
    )


def post(url: str, path: str, body: Any = None, *, secret: str | None = SECRET, **kwargs: Any) -> Any:
    headers = dict(kwargs.pop("headers", {}))
    if secret is not None:
        headers[SECRET_HEADER] = secret
    return requests.post(f"{url}/webhooks/{path}", json=body, headers=headers, timeout=30, **kwargs)


def test_nothing_held_answers_the_acknowledgement_alone_and_creates_no_store(
    receiver: str, held_path: Path
) -> None:
    held = post(receiver, f"{CONN}/_held", {"messenger_user_id": LAN})
    event = post(receiver, f"{CONN}/order_status", {"messenger_user_id": LAN})

    assert (held.status_code, held.json()) == (200, {})
    assert (event.status_code, event.json()) == (200, {"messages": [{"text": ACK}]})
    assert not held_path.exists() and not held_path.parent.exists()
    assert len(recorded("order_status", CONN)) == 1  # the event was recorded as ever


def test_a_call_of_any_event_carries_the_customers_held_messages_once_in_order(
    receiver: str, held_path: Path
) -> None:
    hold_three_for_lan_and_one_for_minh(held_path)

    first = post(receiver, f"{CONN}/order_status", {"messenger_user_id": LAN, "order": "DH10231"})
    again = post(receiver, f"{CONN}/order_status", {"messenger_user_id": LAN})
    minh = post(receiver, f"{CONN}/_held", {"messenger_user_id": MINH})
    minh_again = post(receiver, f"{CONN}/_held", {"messenger_user_id": MINH})

    assert first.status_code == 200, first.text
    assert first.json() == {
        "messages": [
            {"text": ACK},
            {"text": "Đơn DH10231 đã gửi, mã vận đơn GHN8123456VN"},
            {"text": "Xem hành trình"},
            {"attachment": {"type": "image", "payload": {"url": "https://x.vn/a.png"}}},
        ],
        "set_attributes": {"ma_don": "DH10231", "sao": 5},
        "redirect_to_blocks": ["danh_gia"],
    }
    assert again.json() == {"messages": [{"text": ACK}]}  # delivered once
    assert minh.json() == {"messages": [{"text": "Anh Minh ơi, đơn DH10240 đã gửi"}]}  # his own only
    assert minh_again.json() == {}
    assert [e["messenger_user_id"] for e in recorded("order_status", CONN)] == [LAN, LAN]
    delivered = wait_for(lambda: recorded("held_delivered", CONN), 2)
    assert [(e["messenger_user_id"], len(e["fields"]["messages"])) for e in delivered] == [
        (LAN, 3),
        (MINH, 1),
    ]
    assert [m["kind"] for m in delivered[0]["fields"]["messages"]] == [
        "send_text",
        "send_message",
        "broadcast_block",
    ]
    assert delivered[0]["fields"]["during"] == "order_status" and delivered[1]["fields"]["during"] == "_held"
    text = json.dumps(delivered, ensure_ascii=False)
    for never in ("GHN8123456VN", "Minh ơi", SECRET, TOKEN):
        assert never not in text  # the event names the messages, never their text or a secret


def wait_for(read: Any, count: int, seconds: float = 10.0) -> Any:
    """``read()`` once it has ``count`` items (the delivery is recorded after the answer went)."""
    deadline = time.monotonic() + seconds
    while len(found := read()) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def test_a_repeated_call_gets_its_first_answer_again_and_nothing_more_is_delivered(
    receiver: str, held_path: Path
) -> None:
    holder(held_path, "send_text", {"text": "Đơn DH10231 đã gửi"}).hold(LAN, "a")
    body = {"messenger_user_id": LAN}
    first = post(receiver, f"{CONN}/_held", body, headers={"Idempotency-Key": "call-7"})
    holder(held_path, "send_text", {"text": "Tin sau"}).hold(LAN, "b")
    repeated = post(receiver, f"{CONN}/_held", body, headers={"Idempotency-Key": "call-7"})
    other = post(receiver, f"{CONN}/_held", body, headers={"Idempotency-Key": "call-8"})

    assert first.json() == repeated.json() == {"messages": [{"text": "Đơn DH10231 đã gửi"}]}
    assert other.json() == {"messages": [{"text": "Tin sau"}]}
    assert len(wait_for(lambda: recorded("held_delivered", CONN), 2)) == 2  # one per delivery, not per call


def test_an_expired_message_is_never_delivered(receiver: str, held_path: Path) -> None:
    holder(held_path, "send_text", {"text": "Hết hạn"}, hold_for=0.05).hold(LAN, "a")
    time.sleep(0.1)
    answer = post(receiver, f"{CONN}/_held", {"messenger_user_id": LAN})
    assert answer.json() == {}
    from airflow_provider_ahachat.held.store import Selection

    (left,) = HeldStore.sqlite(held_path).select(Selection(CONN, expired=True))
    assert (left.state, left.status(time.time())) == ("held", "expired")  # kept, never delivered


@pytest.mark.parametrize(
    ("case", "status", "secret", "body", "extra"),
    [
        ("wrong secret", 401, "nope", {"messenger_user_id": LAN}, {}),
        ("no secret", 401, None, {"messenger_user_id": LAN}, {}),
        ("receiving turned off", 403, SECRET, {"messenger_user_id": LAN}, {"webhook_enabled": "false"}),
        ("no user ID", 422, SECRET, {"order": "DH1"}, {}),
        ("bad answer_keys", 500, SECRET, {"messenger_user_id": LAN}, {"answer_keys": {"blocks": "b"}}),
    ],
)
def test_the_held_route_is_authenticated_and_checked_as_every_webhook_route(
    receiver: str,
    held_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    case: str,
    status: int,
    secret: str | None,
    body: Any,
    extra: dict[str, Any],
) -> None:
    holder(held_path, "send_text", {"text": "Đơn DH10231 đã gửi"}).hold(LAN, "a")
    monkeypatch.setenv("AIRFLOW_CONN_AHA_HELD", conn(**extra))
    for path in ("_held", "order_status"):
        answer = post(receiver, f"{CONN}/{path}", body, secret=secret)
        assert answer.status_code == status, (case, path, answer.text)
        assert "Đơn" not in answer.text
    if status == 500:
        assert "answer_keys.blocks" in answer.json()["error"]
    assert HeldStore.sqlite(held_path).delivered(_lan(), call="x") == []
    monkeypatch.setenv("AIRFLOW_CONN_AHA_HELD", conn())
    assert post(receiver, f"{CONN}/_held", {"messenger_user_id": LAN}).json() == {
        "messages": [{"text": "Đơn DH10231 đã gửi"}]
    }  # still held after every refused call


def _lan() -> Any:
    from airflow_provider_ahachat.held.store import Customer

    return Customer(CONN, BOT_ID, LAN)


def test_the_answer_uses_the_connections_answer_keys(
    receiver: str, held_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_AHA_HELD",
        conn(answer_keys=json.dumps({"set_attributes": "attributes", "redirect_to_blocks": "go_to"})),
    )
    holder(held_path, "broadcast_block", {"block_name": "danh_gia", "attributes": {"ma_don": "DH1"}}).hold(
        LAN, "a"
    )
    answer = post(receiver, f"{CONN}/_held", {"messenger_user_id": LAN})
    assert answer.json() == {"attributes": {"ma_don": "DH1"}, "go_to": ["danh_gia"]}


def test_the_bot_cannot_record_the_delivery_event_itself(receiver: str, held_path: Path) -> None:
    # A customer of this test only: the deliveries of earlier tests record their events after their
    # answers, and one may land while this test runs.
    only_here = "7000000000000001"
    answer = post(receiver, f"{CONN}/held_delivered", {"messenger_user_id": only_here})
    assert answer.status_code == 422 and "recorded by Airflow itself" in answer.json()["error"]
    assert [e for e in recorded("held_delivered", CONN) if e["messenger_user_id"] == only_here] == []


def test_the_sandboxs_json_api_step_shows_the_held_messages_in_the_outbox_in_order(
    receiver: str, held_path: Path, sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = {"redirect_to_blocks": "go_to_blocks"}  # AhaChat reading another key, and the connection told
    monkeypatch.setenv("AIRFLOW_CONN_AHA_HELD", conn(webhook_replies={"order_status": ACK}, answer_keys=keys))
    sandbox.configure(answer_keys=keys)
    sandbox.update_user(LAN, attributes={"order_id": "DH0"})
    hold_three_for_lan_and_one_for_minh(held_path, block="confirm_delivery", name="order_id")
    step = {
        "url": f"{receiver}/webhooks/{CONN}/order_status",
        "headers": {SECRET_HEADER: SECRET},
        "body": {"messenger_user_id": "{{messenger_user_id}}"},
    }
    sandbox.set_json_api("hoi_don", [step])
    since = max((e["seq"] for e in sandbox.outbox()), default=0)

    sandbox.update_user(LAN, run_block="hoi_don")
    sandbox.update_user(LAN, run_block="hoi_don")

    shown = [e for e in sandbox.outbox(LAN, since=since) if e["kind"] == "json_api"]
    texts = [m.get("text") for m in shown[0]["messages"]]
    assert texts[:4] == [
        ACK,
        "Đơn DH10231 đã gửi, mã vận đơn GHN8123456VN",
        "Xem hành trình",
        None,  # the image
    ]
    # Then the broadcast's block, as AhaChat runs the answer's redirect, with the attributes set first.
    assert shown[0]["blocks"] == ["confirm_delivery"]
    assert texts[4:] == ["Chào Lan, bạn đã nhận được đơn hàng DH10231 chưa?"]
    assert [m.get("text") for m in shown[1]["messages"]] == [ACK]  # once
    assert sandbox.user(LAN)["attributes"]["order_id"] == "DH10231"
    assert sandbox.user(LAN)["attributes"]["sao"] == 5
    assert all("Minh" not in json.dumps(e, ensure_ascii=False) for e in sandbox.outbox(LAN, since=since))
