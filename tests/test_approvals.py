"""
Approvals from Messenger without Airflow processes: the signed tokens, the question within
Messenger's limits, and the answer endpoint over real HTTP (the sandbox's tap calling it), with a
recording function in place of Airflow's HITL answer path (tests/test_hitl_answer.py checks that).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
import types
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import uvicorn
from fastapi import FastAPI

from airflow_provider_ahachat.exceptions import AhaChatValidationError
from airflow_provider_ahachat.inbound.answer import OUTCOME_HEADER, approvals_router
from airflow_provider_ahachat.inbound.keys import APPROVAL, WEBHOOK, derive_key, hkdf_sha256
from airflow_provider_ahachat.inbound.question import labels_for, question_message
from airflow_provider_ahachat.inbound.tokens import AnswerToken, Question, TokenError, peek, sign, verify
from airflow_provider_ahachat.models import DynamicMessage
from airflow_provider_ahachat.sandbox import SandboxServer

SECRET = "unit-secret-0f3b-never-logged"
OWNER = "6620193847561029"
NOW = 1_800_000_000.0
TOKEN = AnswerToken(
    "shop", "refunds", "manual__1", "approve", -1, 1, OWNER, "Approve", "Đồng ý", int(NOW) + 60
)
QUESTION = Question("shop", 1, "9f1c2b3a4d5e6f708192a3b4c5d6e7f8", int(NOW) + 60)
NONCE = QUESTION.nonce


# -- tokens


def test_a_token_verifies_with_its_secret_and_its_questions_nonce_until_it_expires() -> None:
    signed = sign(TOKEN, SECRET, NONCE)
    assert verify(signed, SECRET, NONCE, now=NOW) == TOKEN
    assert peek(signed) == TOKEN
    assert SECRET not in signed and NONCE not in signed
    with pytest.raises(TokenError, match="expired"):
        verify(signed, SECRET, NONCE, now=NOW + 60)
    with pytest.raises(TokenError, match="forged"):
        verify(signed, "another secret", NONCE, now=NOW)
    with pytest.raises(TokenError, match="forged"):  # the secret alone signs nothing
        verify(signed, SECRET, "0" * 32, now=NOW)


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(AnswerToken)])
def test_changing_any_field_breaks_the_signature(field: str) -> None:
    value = getattr(TOKEN, field)
    change: dict[str, Any] = {field: value + 1 if isinstance(value, int) else value + "x"}
    changed = dataclasses.replace(TOKEN, **change)
    payload = sign(changed, "attacker", NONCE).split(".")[0]
    signature = sign(TOKEN, SECRET, NONCE).split(".")[1]
    with pytest.raises(TokenError, match="forged"):
        verify(f"{payload}.{signature}", SECRET, NONCE, now=NOW)


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "!!!.???", "e30.", "x" * 5000])
def test_garbage_is_malformed_or_forged(garbage: str) -> None:
    with pytest.raises(TokenError) as caught:
        verify(garbage, SECRET, NONCE, now=NOW)
    assert caught.value.reason in ("malformed", "forged")
    assert peek(garbage) is None


def test_keys_are_hkdf_sha256_and_one_secret_gives_a_key_per_purpose() -> None:
    # RFC 5869, test case 1.
    okm = hkdf_sha256(
        bytes.fromhex("0b" * 22),
        salt=bytes.fromhex("000102030405060708090a0b0c"),
        info=bytes.fromhex("f0f1f2f3f4f5f6f7f8f9"),
        length=42,
    )
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )
    webhook, approval = derive_key(SECRET, WEBHOOK), derive_key(SECRET, APPROVAL)
    assert len({webhook, approval, SECRET.encode()}) == 3
    assert derive_key(SECRET, WEBHOOK) == webhook  # the same secret, the same key


def test_a_question_record_is_read_back_only_when_whole() -> None:
    assert Question.from_json(QUESTION.to_json()) == QUESTION
    assert QUESTION.xcom_key == "ahachat_question.shop"
    for broken in (
        None,
        "x",
        {},
        {**QUESTION.to_json(), "nonce": "short"},
        {**QUESTION.to_json(), "expires": "1"},
    ):
        assert Question.from_json(broken) is None
    assert Question.new("shop", 2, 5).nonce != Question.new("shop", 2, 5).nonce


# -- the question


def url(option: str, title: str) -> str:
    return f"https://airflow.example.com/ahachat/approvals/answer?t={option}&messenger_user_id={{{{messenger_user_id}}}}"


@pytest.mark.parametrize(
    ("count", "shape"),
    [(1, "buttons"), (3, "buttons"), (4, "quick_replies"), (13, "quick_replies"), (14, "ui")],
)
def test_the_question_fits_messengers_limits(count: int, shape: str) -> None:
    options = labels_for([f"Option {i}" for i in range(count)], None)
    message = question_message("Chọn?", "Chi tiết", options, answer_url=url, ui_url="https://a.example/ui")
    DynamicMessage.parse(message)  # valid as AhaChat's format, with Messenger's limits
    first = message["messages"][0]
    if shape == "buttons":
        assert [b["title"] for b in first["attachment"]["payload"]["buttons"]] == [t for _, t in options]
    elif shape == "quick_replies":
        assert [r["type"] for r in first["quick_replies"]] == ["json_plugin_url"] * count
    else:
        assert first["attachment"]["payload"]["buttons"] == [
            {"type": "web_url", "url": "https://a.example/ui", "title": "Trả lời ở Airflow"}
        ]


def test_labels_are_vietnamese_by_default_and_checked() -> None:
    assert labels_for(["Approve", "Reject"], None) == [("Approve", "Đồng ý"), ("Reject", "Từ chối")]
    assert labels_for(["Approve", "Reject"], {"Approve": "Duyệt"})[0] == ("Approve", "Duyệt")
    with pytest.raises(
        AhaChatValidationError, match=r"option_labels\['Approve'\]: a button title must be 1 to 20"
    ):
        labels_for(["Approve"], {"Approve": "Đồng ý hoàn tiền cho khách"})
    with pytest.raises(AhaChatValidationError, match=r"option_labels\['Maybe'\]: no such option"):
        labels_for(["Approve"], {"Maybe": "Có lẽ"})


def test_a_long_question_is_cut_to_the_button_template_limit() -> None:
    message = question_message("S" * 700, None, [("A", "A")], answer_url=url, ui_url=None)
    text = message["messages"][0]["attachment"]["payload"]["text"]
    assert len(text) == 640 and text.endswith("…")


# -- the endpoint, tapped through the sandbox


def questions(claim: AnswerToken) -> Question | None:
    """The questions the tests' task asked: refunds/manual__1/approve, through ``shop``."""
    where = (claim.dag_id, claim.run_id, claim.task_id, claim.map_index, claim.conn_id)
    return QUESTION if where == ("refunds", "manual__1", "approve", -1, "shop") else None


@dataclasses.dataclass
class Endpoint:
    url: str
    recorded: list[AnswerToken]
    outcome: list[str]


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    recorded: list[AnswerToken] = []
    outcome = ["recorded"]

    def record(token: AnswerToken, question: Question) -> str:
        if outcome[0] == "recorded":
            recorded.append(token)
        return outcome[0]

    app = FastAPI()
    app.include_router(
        approvals_router(
            load_question=questions, load_secret={"shop": SECRET}.get, record=record, clock=lambda: NOW
        ),
        prefix="/ahachat",
    )
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            thread.join(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield Endpoint(f"http://127.0.0.1:{port}/ahachat/approvals/answer", recorded, outcome)
    finally:
        server.should_exit = True
        thread.join(30)


def button_url(
    endpoint: Endpoint, token: AnswerToken = TOKEN, secret: str = SECRET, nonce: str = NONCE
) -> str:
    return f"{endpoint.url}?t={sign(token, secret, nonce)}&messenger_user_id={{{{messenger_user_id}}}}"


def test_a_sandbox_tap_calls_the_button_and_shows_the_confirmation(
    endpoint: Endpoint, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "airflow_provider_ahachat.approvals.audit")
    with SandboxServer() as sandbox:
        message = question_message(
            "Duyệt?", None, [("Approve", "Đồng ý")], answer_url=lambda o, t: button_url(endpoint), ui_url=None
        )
        requests.post(
            f"{sandbox.url}/api/bots/{sandbox.bot_id}/users/{OWNER}/messages",
            params={"ahachat_token": sandbox.token},
            json=message,
            timeout=30,
        ).raise_for_status()
        tap = sandbox.tap(OWNER, "Đồng ý")
        assert tap["call"]["method"] == "GET" and tap["call"]["status"] == 200
        assert f"messenger_user_id={OWNER}" in tap["call"]["url"]
        assert tap["reply"]["text"] == "Đã ghi nhận: Đồng ý"
        assert sandbox.outbox(user_id=OWNER)[-1]["text"] == "Đã ghi nhận: Đồng ý"
        with pytest.raises(Exception, match="no button or quick reply 'Từ chối'"):
            sandbox.tap(OWNER, "Từ chối")
    assert endpoint.recorded == [TOKEN]
    assert f"recorded: ahachat:{OWNER} chose 'Approve' for dag_id=refunds run_id=manual__1" in caplog.text
    assert SECRET not in caplog.text and sign(TOKEN, SECRET, NONCE) not in caplog.text


def answer(url: str, tapper: str = OWNER, method: str = "GET") -> tuple[str, str]:
    filled = url.replace("{{messenger_user_id}}", tapper)
    got = requests.request(method, filled, timeout=30)
    assert got.status_code == 200
    return got.headers[OUTCOME_HEADER], got.json()["messages"][0]["text"]


def test_refusals_record_nothing_and_say_why(endpoint: Endpoint, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "airflow_provider_ahachat.approvals.audit")
    cases: dict[str, tuple[str, str, str]] = {
        "someone else": (button_url(endpoint), "4102938475610293", "not_approver"),
        "nobody said who": (button_url(endpoint), "", "not_approver"),
        "another secret": (button_url(endpoint, secret="guess"), OWNER, "forged"),
        "another question's nonce": (button_url(endpoint, nonce="1" * 32), OWNER, "forged"),
        "unknown connection": (
            button_url(endpoint, dataclasses.replace(TOKEN, conn_id="x")),
            OWNER,
            "forged",
        ),
        "an earlier try": (
            button_url(endpoint, dataclasses.replace(TOKEN, try_number=0)),
            OWNER,
            "earlier_try",
        ),
        "expired": (
            button_url(endpoint, dataclasses.replace(TOKEN, expires=int(NOW))),
            OWNER,
            "expired",
        ),
        "no token": (f"{endpoint.url}?messenger_user_id={{{{messenger_user_id}}}}", OWNER, "malformed"),
    }
    for case, (url_, tapper, expected) in cases.items():
        assert answer(url_, tapper)[0] == expected, case
    assert endpoint.recorded == []
    # What Airflow refuses is passed on as it says.
    for refusal in ("answered", "earlier_try", "not_assigned", "bad_option", "no_question"):
        endpoint.outcome[0] = refusal
        outcome, text = answer(button_url(endpoint), method="POST")
        assert outcome == refusal and text.startswith("Không ghi nhận: ")
    assert endpoint.recorded == []
    assert SECRET not in caplog.text and sign(TOKEN, SECRET, NONCE) not in caplog.text
    assert "refused (not_approver): ahachat:4102938475610293 tapped 'Approve' meant for ahachat:" + OWNER in (
        caplog.text
    )


def test_a_failure_in_airflow_is_answered_plainly() -> None:
    from fastapi.testclient import TestClient

    def broken(_: Any, __: Any) -> str:
        raise RuntimeError("database is locked")

    app = FastAPI()
    app.include_router(
        approvals_router(
            load_question=questions, load_secret={"shop": SECRET}.get, record=broken, clock=lambda: NOW
        )
    )
    with TestClient(app) as client:
        got = client.get(f"/approvals/answer?t={sign(TOKEN, SECRET, NONCE)}&messenger_user_id={OWNER}")
    assert got.status_code == 200
    assert got.headers[OUTCOME_HEADER] == "unavailable"
    assert got.json()["messages"][0]["text"].startswith("Chưa ghi nhận")


# -- asking outside Messenger's 24-hour window


def ask(
    sandbox: SandboxServer,
    monkeypatch: pytest.MonkeyPatch,
    approvers: list[str],
    extra: dict[str, Any] | None = None,
    **notifier_args: Any,
) -> tuple[Any, dict[str, Any]]:
    """Ask ``approvers`` a refund question through the sandbox, as a task would; the task and its context."""

    from airflow_provider_ahachat.notifications import hitl
    from airflow_provider_ahachat.notifications.hitl import AhaChatHITLNotifier
    from airflow_provider_ahachat.operators.hitl import AhaChatApprovalOperator

    # Each test is a task try of its own: no question remembered from another test's try.
    monkeypatch.setattr(hitl, "_ASKED", {})
    conn = {
        "conn_type": "ahachat",
        "login": sandbox.bot_id,
        "password": sandbox.token,
        "host": sandbox.url,
        "extra": {"approval_secret": SECRET, **(extra or {})},
    }
    monkeypatch.setenv("AIRFLOW_CONN_HITL_ASK", json.dumps(conn))
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://airflow.shop.vn")
    task = AhaChatApprovalOperator(
        task_id="approve", subject="Duyệt hoàn tiền 450.000đ cho đơn DH10231?", approvers=approvers
    )
    task.assigned_users = [{"id": f"ahachat:{who}", "name": who} for who in approvers]
    ti = RecordingTI(dag_id="refunds", run_id="manual__1", task_id="approve", map_index=-1, try_number=1)
    notifier = AhaChatHITLNotifier(approvers=approvers, ahachat_conn_id="hitl_ask", **notifier_args)
    context: Any = {"task": task, "ti": ti, "task_instance": ti}  # what notify() reads of a context
    notifier.notify(context)
    return task, context


LAN_ID, BAO_ID = "3824547807572463", "5310298476123984"  # wrote 30 minutes ago; 3 days ago
REQUIRED_ACTIONS = (
    "https://airflow.shop.vn/dags/refunds/runs/manual__1/tasks/approve/required_actions?map_index=-1"
)


@pytest.mark.usefixtures("airflow_db")
def test_an_approver_outside_the_window_is_named_with_the_link_to_answer_in_airflow(
    sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """
    Within 24 hours of their last message an approver gets the question; outside it Messenger
    refuses it, once, and the log names them with the link to answer in Airflow's UI. No retired
    tag is sent, and a question_block without a tag is not tried (Messenger would refuse it alike).
    """
    sandbox.reset()
    ask(sandbox, monkeypatch, [LAN_ID, BAO_ID], question_block="payment_reminder")
    logged = capfd.readouterr().out

    (to_lan,) = sandbox.outbox(LAN_ID)
    assert to_lan["kind"] == "dynamic"
    assert sandbox.outbox(BAO_ID) == []
    to_bao = [r for r in sandbox.request_log() if f"/users/{BAO_ID}/" in r["path"]]
    assert [(r["path"].rsplit("/", 1)[-1], r["status"]) for r in to_bao] == [("messages", 422)]
    assert not any("ahachat_message_tag" in r["query"] for r in sandbox.request_log())
    assert (
        f"approver {BAO_ID} is outside Messenger's 24-hour window, so was not asked in Messenger "
        f"((#10) This message is sent outside of allowed window). They can answer in Airflow's UI: "
        f"{REQUIRED_ACTIONS}"
    ) in logged
    assert f"asked 1 of 2 approvers: {LAN_ID}" in logged


@pytest.mark.usefixtures("airflow_db")
def test_when_every_approver_is_outside_the_window_the_task_waits_for_the_ui(
    sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    sandbox.reset()
    ask(sandbox, monkeypatch, [BAO_ID])  # no raise: the task stays answerable in Airflow's UI
    logged = capfd.readouterr().out
    assert sandbox.outbox() == []
    assert (
        f"no approver could be asked in Messenger ({BAO_ID} outside the 24-hour window); the task "
        f"waits for an answer in Airflow's UI: {REQUIRED_ACTIONS}"
    ) in logged


@pytest.mark.usefixtures("airflow_db")
def test_a_page_that_may_still_use_a_tag_asks_by_the_question_block(
    sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    A connection whose page may still use a tag (its extra ``message_tags`` and
    ``default_message_tag``; here under the sandbox's rules before April 2026) asks an approver
    outside the window with the question block, carrying the question and each button's signed URL.
    """
    from urllib.parse import unquote

    from airflow_provider_ahachat.notifications.hitl import AhaChatHITLNotifier

    sandbox.reset()
    sandbox.configure(messenger_rules="2025")
    tags = {"message_tags": "ACCOUNT_UPDATE", "default_message_tag": "account_update"}
    _, context = ask(sandbox, monkeypatch, [LAN_ID, BAO_ID], extra=tags, question_block="payment_reminder")

    ti = context["ti"]
    recorded = Question.from_json(ti.xcoms["ahachat_question.hitl_ask"])
    assert recorded is not None and (recorded.conn_id, recorded.try_number) == ("hitl_ask", 1)
    (to_lan,) = sandbox.outbox(LAN_ID)
    (to_bao,) = sandbox.outbox(BAO_ID)
    assert to_bao["kind"] == "broadcast" != to_lan["kind"]  # a message to Lan, a broadcast to Bảo
    assert to_bao["message_tag"] == "ACCOUNT_UPDATE"
    assert to_bao["block_name"] == "payment_reminder"
    attributes = to_bao["attributes"]
    assert attributes["airflow_hitl_text"].startswith("Duyệt hoàn tiền 450.000đ")
    assert attributes["airflow_hitl_ui_url"] == REQUIRED_ACTIONS
    assert [attributes["airflow_hitl_title_1"], attributes["airflow_hitl_title_2"]] == ["Đồng ý", "Từ chối"]
    for n in (1, 2):
        url = attributes[f"airflow_hitl_url_{n}"]
        assert url.startswith("https://airflow.shop.vn/ahachat/approvals/answer?t=")
        token = url.split("t=", 1)[1].split("&", 1)[0]
        signed = verify(unquote(token), SECRET, recorded.nonce, now=time.time())
        assert (signed.approver, signed.dag_id, signed.try_number) == (BAO_ID, "refunds", 1)
    assert SECRET not in json.dumps(sandbox.outbox(), ensure_ascii=False)
    assert recorded.nonce not in json.dumps(sandbox.outbox(), ensure_ascii=False)
    # Asked again in the same try (a second notifier on the connection): the same question.
    AhaChatHITLNotifier(
        approvers=[LAN_ID, BAO_ID], ahachat_conn_id="hitl_ask", question_block="payment_reminder"
    ).notify(context)  # type: ignore[arg-type]
    assert Question.from_json(ti.xcoms["ahachat_question.hitl_ask"]) == recorded


def test_approvals_never_send_a_retired_tag() -> None:
    """The question's tag is none by default; a retired one fails when the DAG is parsed."""
    from airflow_provider_ahachat.notifications.hitl import DEFAULT_QUESTION_TAG, AhaChatHITLNotifier
    from airflow_provider_ahachat.operators.hitl import AhaChatApprovalOperator, AhaChatHITLOperator

    assert DEFAULT_QUESTION_TAG is None
    assert AhaChatHITLNotifier(approvers="1").message_tag is None
    for tag in ("ACCOUNT_UPDATE", "account_update", "Confirmed_Event_Update", "NON_PROMOTIONAL_SUBSCRIPTION"):
        with pytest.raises(AhaChatValidationError, match="Meta"):
            AhaChatApprovalOperator(task_id="a", subject="?", approvers="1", message_tag=tag)
        with pytest.raises(AhaChatValidationError, match="Meta"):
            AhaChatHITLOperator(task_id="h", subject="?", options=["A"], approvers="1", message_tag=tag)


class RecordingTI(types.SimpleNamespace):
    """The task instance as notify() uses it: its names, its try, and its XComs."""

    def __init__(self, **names: Any) -> None:
        super().__init__(**names)
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        assert key not in self.xcoms, "the question was recorded twice"
        self.xcoms[key] = json.loads(json.dumps(value))
