"""
Approvals from Messenger, end to end with real Airflow processes: ``airflow standalone`` on a free
port with its own home, the provider's plugin on its API server, the example DAG
``example_ahachat_refund_approval`` and the DAGs of ``tests/hitl_dags`` in its DAGs folder, and the
sandbox as AhaChat. The question arrives in the owner's Messenger (the sandbox's outbox), the
sandbox taps a button as the owner, and the task resumes with the option and the owner as
``responded_by``. Every refused tap records nothing; timeouts and a retry behave as Airflow's.

Every run is started at once by the fixture, so the scenarios wait in parallel.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from helpers.airflow_processes import AirflowProcesses, wait_until
from helpers.approval_helpers import (
    WAIT,
    buttons,
    parked_state,
    question_of,
    questions,
    token_of,
    trigger,
    wait_for_park,
    with_token,
)
from helpers.approval_helpers import call as call_as
from helpers.dag_helpers import sqlite_table

from airflow_provider_ahachat.inbound.question import UI_BUTTON_TITLE
from airflow_provider_ahachat.inbound.tokens import AnswerToken, sign
from airflow_provider_ahachat.sandbox import SandboxControlError, SandboxServer

pytestmark = [pytest.mark.airflow_processes, pytest.mark.timeout(3600)]

ROOT = Path(__file__).resolve().parents[2]
REFUND = "example_ahachat_refund_approval"
CASES = (
    "ahachat_hitl_timeout_default",
    "ahachat_hitl_timeout_fail",
    "ahachat_hitl_retry",
    "ahachat_hitl_nobody",
    "ahachat_hitl_outside_window",
    "ahachat_hitl_many_options",
)
CONN_ID = "ahachat_sandbox"
SECRET = "approval-secret-7c2e91d4-keep-out-of-logs"
OWNER, LAN, MINH = "6620193847561029", "3824547807572463", "4102938475610293"
BAO = "5310298476123984"  # last wrote 3 days ago: outside Messenger's 24-hour window
# The options of the questions of ahachat_hitl_many_options (tests/hitl_dags): 4 and 13 of them.
SLOTS = ["8h-10h", "10h-12h", "14h-16h", "19h-21h"]
WAREHOUSES = [f"Kho Quận {n}" for n in range(1, 13)] + ["Kho Thủ Đức"]


@dataclass
class Setup:
    airflow: AirflowProcesses
    sandbox: SandboxServer
    db: Path
    runs: dict[str, tuple[str, str]]  # scenario -> (dag_id, run_id)


def shop_database(path: Path) -> Path:
    create = (
        "CREATE TABLE refund_requests (order_id TEXT PRIMARY KEY, messenger_user_id TEXT, amount INTEGER,"
        " status TEXT)"
    )
    rows = [("DH10231", LAN, 450000, "requested"), ("DH10232", MINH, 1250000, "requested")]
    return sqlite_table(path, create, rows)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("approvals")
    dags = tmp / "dags"
    dags.mkdir()
    shutil.copy(ROOT / "example_dags" / f"{REFUND}.py", dags)
    shutil.copy(ROOT / "tests" / "integration" / "hitl_dags" / "ahachat_hitl_cases.py", dags)
    db = shop_database(tmp / "shop.db")
    with SandboxServer() as sandbox:
        uri = sandbox.connection_uri
        env = {
            f"AIRFLOW_CONN_{CONN_ID.upper()}": f"{uri}{'&' if '?' in uri else '?'}approval_secret={SECRET}",
            "AIRFLOW_CONN_SHOP_DB": json.dumps({"conn_type": "sqlite", "host": str(db)}),
            "AHACHAT_CONN_ID": CONN_ID,
            "SHOP_OWNER_ID": OWNER,
            # The scheduler looks for timed-out questions every 2 s rather than 15.
            "AIRFLOW__SCHEDULER__TRIGGER_TIMEOUT_CHECK_INTERVAL": "2",
        }
        with AirflowProcesses(tmp / "home", dags_folder=dags, env=env, start_timeout=1500) as airflow:
            for dag_id in (REFUND, *CASES):
                airflow.wait_for_dag(dag_id)
            runs = {
                "approve": (REFUND, trigger(airflow, REFUND, {"order_id": "DH10231"})),
                "reject": (REFUND, trigger(airflow, REFUND, {"order_id": "DH10232"})),
                **{dag_id: (dag_id, trigger(airflow, dag_id)) for dag_id in CASES},
            }
            yield Setup(airflow, sandbox, db, runs)
            logs = "".join(p.read_text(errors="replace") for p in (airflow.home / "logs").rglob("*.log"))
            assert SECRET not in logs + airflow.log_tail(10**9)


# -- reading what happened


def call(url: str, tapper: str = OWNER) -> tuple[str, str]:
    """Call a button's URL as AhaChat does when ``tapper`` (the owner by default) taps it."""
    return call_as(url, tapper)


def hitl(setup: Setup, scenario: str, task_id: str) -> dict[str, Any]:
    dag_id, run_id = setup.runs[scenario]
    detail = setup.airflow.get_json(
        f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/-1/hitlDetails"
    )
    assert detail is not None
    return dict(detail)


def task_states(setup: Setup, scenario: str) -> dict[str, tuple[str, int]]:
    dag_id, run_id = setup.runs[scenario]
    answer = setup.airflow.get_json(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
    return {t["task_id"]: (t["state"], t["try_number"]) for t in answer["task_instances"]}


def finished(setup: Setup, scenario: str) -> str:
    dag_id, run_id = setup.runs[scenario]

    def state() -> str | None:
        run = setup.airflow.get_json(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
        return run["state"] if run and run["state"] in ("success", "failed") else None

    try:
        final = str(wait_until(state, WAIT, f"the run of {scenario} to finish", 1.0))
    except TimeoutError:
        print(setup.airflow.log_tail(20000))
        raise
    if final == "failed":  # say which task failed, for whoever reads the test's output
        tasks = setup.airflow.get_json(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances") or {}
        print({t["task_id"]: t["state"] for t in tasks.get("task_instances", [])})
        print(setup.airflow.log_tail(20000))
    return final


def wait_for_questions(setup: Setup, marker: str, count: int = 1) -> list[dict[str, Any]]:
    try:
        found: list[dict[str, Any]] = wait_until(
            lambda: (q := questions(setup.sandbox, OWNER, marker)) and len(q) >= count and q,
            WAIT,
            f"{count} question(s) about {marker!r} in the owner's outbox",
            1.0,
        )
    except TimeoutError:
        print(setup.airflow.log_tail(20000))
        raise
    return found


def tapped(setup: Setup, title: str, seq: int) -> str:
    """The owner taps ``title`` in outbox entry ``seq``: the reply they see (the server's log if none)."""
    (entry,) = [e for e in setup.sandbox.outbox(user_id=OWNER) if e["seq"] == seq]
    wait_for_park(setup.airflow, token_of(buttons(entry)[title]))
    reply = setup.sandbox.tap(OWNER, title, seq=seq)["reply"]
    log = setup.airflow.log_tail(10**9)
    trouble = log[log.find("could not be recorded") - 200 :][:8000] if "could not be recorded" in log else ""
    assert reply is not None, log[-8000:]
    assert not reply["text"].startswith("Chưa ghi nhận"), trouble
    return str(reply["text"])


# -- the scenarios


def test_the_owner_taps_approve_and_the_refund_runs(setup: Setup) -> None:
    (question,) = wait_for_questions(setup, "DH10231")
    message = question["messages"][0]
    payload = message["attachment"]["payload"]
    assert payload["template_type"] == "button"
    assert (
        payload["text"]
        == "Duyệt hoàn tiền 450.000đ cho đơn DH10231?\n\nKhách hàng " + LAN + " yêu cầu hoàn tiền."
    )
    urls = buttons(question)
    assert list(urls) == ["Đồng ý", "Từ chối"]
    for url in urls.values():
        assert url.startswith(f"{setup.airflow.url}/ahachat/approvals/answer?t=")
        assert url.endswith("&messenger_user_id={{messenger_user_id}}")
    token = token_of(urls["Đồng ý"])
    _, run_id = setup.runs["approve"]
    assert (token.dag_id, token.run_id, token.task_id, token.map_index, token.try_number) == (
        REFUND,
        run_id,
        "approve_refund",
        -1,
        1,
    )
    assert (token.approver, token.option, token.label) == (OWNER, "Approve", "Đồng ý")
    assert token.expires > time.time() + 23 * 3600  # the one-day response_timeout

    assert tapped(setup, "Đồng ý", question["seq"]) == "Đã ghi nhận: Đồng ý"
    assert setup.sandbox.outbox(user_id=OWNER)[-1]["kind"] == "json_api"

    # The same button again, the other button, and any token for this try: nothing more is recorded.
    assert tapped(setup, "Đồng ý", question["seq"]) == "Không ghi nhận: câu hỏi đã có câu trả lời."
    assert call(urls["Từ chối"])[0] == "answered"
    assert finished(setup, "approve") == "success"
    detail = hitl(setup, "approve", "approve_refund")
    assert detail["chosen_options"] == ["Approve"]
    assert detail["responded_by_user"] == {"id": f"ahachat:{OWNER}", "name": f"ahachat:{OWNER}"}
    assert {"id": f"ahachat:{OWNER}", "name": f"ahachat:{OWNER}"} in detail["assigned_users"]
    states = task_states(setup, "approve")
    assert states["refund"][0] == "success"
    assert states["tell_refunded"][0] == "success"
    assert states["tell_declined"][0] == "skipped"
    told = [e["text"] for e in setup.sandbox.outbox(user_id=LAN) if e["kind"] == "text"]
    assert told == ["Shop đã hoàn 450.000đ cho đơn DH10231. Tiền sẽ về tài khoản của bạn trong 1-3 ngày."]
    with sqlite3.connect(setup.db) as db:
        assert db.execute("SELECT status FROM refund_requests WHERE order_id = 'DH10231'").fetchone() == (
            "refunded",
        )
    audit = setup.airflow.log_tail(10**9)
    assert (
        f"AhaChat HITL answer recorded: ahachat:{OWNER} chose 'Approve' for dag_id={REFUND} run_id={run_id}"
        in (audit)
    )


def test_every_refused_tap_records_nothing(setup: Setup) -> None:
    (question,) = wait_for_questions(setup, "DH10232")
    urls = buttons(question)
    reject = urls["Từ chối"]
    token = token_of(reject)
    nonce = question_of(setup.airflow, token).nonce
    signed = reject.split("?t=", 1)[1].split("&", 1)[0]
    payload, signature = signed.split(".")
    now = time.time()

    def altered(**change: Any) -> str:
        """The token with one field changed and the original signature."""
        other = sign(dataclasses.replace(token, **change), "whatever", nonce).split(".")[0]
        return with_token(reject, f"{other}.{signature}")

    def resigned(**change: Any) -> str:
        """The token with fields changed, signed as the notifier signs (the secret and the nonce)."""
        return with_token(reject, sign(dataclasses.replace(token, **change), SECRET, nonce))

    refused = {
        "another person taps": (reject, MINH, "not_approver"),
        "signed with another secret": (
            with_token(reject, sign(token, "not-the-secret", nonce)),
            OWNER,
            "forged",
        ),
        "the secret without the question's nonce": (
            with_token(reject, sign(token, SECRET, "0" * 32)),
            OWNER,
            "forged",
        ),
        "no such connection": (resigned(conn_id="nope"), OWNER, "forged"),
        "altered option": (altered(option="Approve", label="Đồng ý"), OWNER, "forged"),
        "altered approver": (altered(approver=MINH), MINH, "forged"),
        "altered try": (altered(try_number=2), OWNER, "forged"),
        "altered run": (altered(run_id=setup.runs["approve"][1]), OWNER, "forged"),
        "altered deadline": (altered(expires=int(now) + 10**6), OWNER, "forged"),
        "truncated": (with_token(reject, f"{payload}.{signature[:-4]}"), OWNER, "forged"),
        "garbage": (with_token(reject, "not-a-token"), OWNER, "malformed"),
        "expired": (resigned(expires=int(now) - 1), OWNER, "expired"),
        "an earlier try": (resigned(try_number=0), OWNER, "earlier_try"),
        "not an assigned user": (resigned(approver=MINH), MINH, "not_assigned"),
        "no such option": (resigned(option="Maybe"), OWNER, "bad_option"),
    }
    # Each is refused at once, and for good: none waits for the task to park (which could answer
    # "unavailable", tap again, on a busy machine).
    outcomes = {case: call(url, tapper) for case, (url, tapper, _) in refused.items()}
    assert {case: outcome for case, (outcome, _) in outcomes.items()} == {
        case: expected for case, (_, _, expected) in refused.items()
    }
    assert all(text.startswith("Không ghi nhận: ") for _, text in outcomes.values())
    assert outcomes["another person taps"][1] == "Không ghi nhận: câu hỏi này dành cho người khác."
    detail = hitl(setup, "reject", "approve_refund")
    assert detail["response_received"] is False
    assert task_states(setup, "reject")["approve_refund"] == (parked_state(), 1)

    # Then the owner's own tap is the answer: Từ chối, and the customer is told.
    assert tapped(setup, "Từ chối", question["seq"]) == "Đã ghi nhận: Từ chối"
    assert finished(setup, "reject") == "success"
    assert hitl(setup, "reject", "approve_refund")["chosen_options"] == ["Reject"]
    states = task_states(setup, "reject")
    assert (states["refund"][0], states["tell_refunded"][0], states["tell_declined"][0]) == (
        "skipped",
        "skipped",
        "success",
    )
    told = [e["text"] for e in setup.sandbox.outbox(user_id=MINH) if e["kind"] == "text"]
    assert told == ["Shop chưa thể hoàn tiền cho đơn DH10232. Nhân viên sẽ gọi cho bạn để hỗ trợ."]
    log = setup.airflow.log_tail(10**9)
    assert f"AhaChat HITL answer refused (not_approver): ahachat:{MINH} tapped 'Reject'" in log
    assert signature not in log.split("AhaChat HITL answer", 1)[1]


def test_a_timeout_with_defaults_answers_them(setup: Setup) -> None:
    (question,) = wait_for_questions(setup, "Giao hàng buổi nào?")
    assert list(buttons(question)) == ["Sáng", "Chiều", "Tối"]
    assert finished(setup, "ahachat_hitl_timeout_default") == "success"
    detail = hitl(setup, "ahachat_hitl_timeout_default", "ask")
    assert (detail["chosen_options"], detail["responded_by_user"]) == (["Chiều"], None)
    assert call(buttons(question)["Sáng"])[0] == "expired"


def test_a_timeout_without_defaults_fails_the_task(setup: Setup) -> None:
    (question,) = wait_for_questions(setup, "Nhập thêm hàng?")
    assert finished(setup, "ahachat_hitl_timeout_fail") == "failed"
    assert task_states(setup, "ahachat_hitl_timeout_fail")["ask"] == ("failed", 1)
    assert hitl(setup, "ahachat_hitl_timeout_fail", "ask")["response_received"] is False
    assert call(buttons(question)["Đồng ý"])[0] == "expired"


def test_a_retry_invalidates_the_earlier_tries_buttons(setup: Setup) -> None:
    first, second = wait_for_questions(setup, "Chấp nhận chênh lệch", count=2)
    old, new = buttons(first)["Đồng ý"], buttons(second)["Đồng ý"]
    assert (token_of(old).try_number, token_of(new).try_number) == (1, 2)
    assert call(old)[0] == "earlier_try"
    # Even signed again before its deadline, a button of the first try grants nothing once the
    # second asks: neither with the second question's nonce nor with the first's.
    second_nonce = question_of(setup.airflow, token_of(new)).nonce
    for nonce in (second_nonce, "0" * 32):
        fresh_old = sign(dataclasses.replace(token_of(old), expires=int(time.time()) + 3600), SECRET, nonce)
        assert call(with_token(old, fresh_old))[0] == "earlier_try"
    as_second = sign(dataclasses.replace(token_of(old), try_number=2), SECRET, "0" * 32)
    assert call(with_token(old, as_second))[0] == "forged"
    assert hitl(setup, "ahachat_hitl_retry", "ask")["response_received"] is False
    assert tapped(setup, "Đồng ý", second["seq"]) == "Đã ghi nhận: Đồng ý"
    assert finished(setup, "ahachat_hitl_retry") == "success"
    assert task_states(setup, "ahachat_hitl_retry")["ask"] == ("success", 2)
    detail = hitl(setup, "ahachat_hitl_retry", "ask")
    assert detail["chosen_options"] == ["Approve"]
    assert detail["responded_by_user"]["id"] == f"ahachat:{OWNER}"


def test_a_question_nobody_receives_fails_the_task(setup: Setup) -> None:
    assert finished(setup, "ahachat_hitl_nobody") == "failed"
    assert task_states(setup, "ahachat_hitl_nobody")["ask"] == ("failed", 1)
    assert not [e for e in setup.sandbox.outbox() if e["messenger_user_id"] == "1111111111111111"]


def test_an_approver_outside_the_window_is_named_with_the_link_and_the_task_is_answered_in_the_ui(
    setup: Setup,
) -> None:
    """
    Messenger refuses the question (Bảo last wrote 3 days ago): the task does not fail, its log
    names Bảo with the link to answer in Airflow's UI, and an answer given there resumes it.
    """
    dag_id, run_id = setup.runs["ahachat_hitl_outside_window"]
    parked = AnswerToken(CONN_ID, dag_id, run_id, "ask", -1, 1, BAO, "Approve", "Đồng ý", 0)
    wait_for_park(setup.airflow, parked)  # only the task's place and try are read
    asked = [r for r in setup.sandbox.request_log(limit=10_000) if f"/users/{BAO}/" in r["path"]]
    assert [(r["path"].rsplit("/", 1)[-1], r["status"]) for r in asked] == [("messages", 422)]  # once
    assert not setup.sandbox.outbox(user_id=BAO)
    logs = "".join(p.read_text(errors="replace") for p in (setup.airflow.home / "logs").rglob("*.log"))
    assert f"approver {BAO} is outside Messenger's 24-hour window" in logs
    link = f"/dags/{dag_id}/runs/{run_id}/tasks/ask/required_actions?map_index=-1"
    assert "They can answer in Airflow's UI: http" in logs and link in logs, logs[-3000:]
    answer = requests.patch(
        f"{setup.airflow.url}/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/ask/-1/hitlDetails",
        json={"chosen_options": ["Approve"], "params_input": {}},
        headers=setup.airflow.auth_headers,
        timeout=120,
    )
    assert answer.status_code == 200, answer.text
    assert finished(setup, "ahachat_hitl_outside_window") == "success"


def test_more_options_than_buttons_go_as_quick_replies_or_a_link_to_the_ui(setup: Setup) -> None:
    dag_id, run_id = setup.runs["ahachat_hitl_many_options"]
    (slot,) = wait_for_questions(setup, "DH10240")
    (warehouse,) = wait_for_questions(setup, "DH10241")
    (province,) = wait_for_questions(setup, "DH10242")

    # 4 and 13 options: the question as a text with one quick reply per option, each calling Airflow.
    for entry, subject, options in (
        (slot, "Giao đơn DH10240 lúc nào?", SLOTS),
        (warehouse, "Xuất đơn DH10241 từ kho nào?", WAREHOUSES),
    ):
        (message,) = entry["messages"]
        assert (message["text"], "attachment" in message) == (subject, False)
        assert [reply["title"] for reply in message["quick_replies"]] == options
        urls = buttons(entry)
        assert list(urls) == options
        for option, url in urls.items():
            assert url.startswith(f"{setup.airflow.url}/ahachat/approvals/answer?t=")
            token = token_of(url)
            assert (token.dag_id, token.run_id, token.option, token.label) == (dag_id, run_id, option, option)

    # 14 options: one button that opens the task's "Required actions" page; nothing in the chat answers.
    (message,) = province["messages"]
    assert "quick_replies" not in message and "/ahachat/approvals/" not in json.dumps(province)
    ui_url = (
        f"{setup.airflow.url}/dags/{dag_id}/runs/{run_id}/tasks/ask_province/required_actions?map_index=-1"
    )
    assert message["attachment"]["payload"] == {
        "template_type": "button",
        "text": "Đơn DH10242 giao về tỉnh nào?",
        "buttons": [{"type": "web_url", "url": ui_url, "title": UI_BUTTON_TITLE}],
    }
    page = requests.get(ui_url, timeout=120)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    with pytest.raises(SandboxControlError) as left:
        setup.sandbox.tap(OWNER, UI_BUTTON_TITLE, seq=province["seq"])
    assert left.value.status == 400

    # Tapping a quick reply answers as a button does.
    assert tapped(setup, "19h-21h", slot["seq"]) == "Đã ghi nhận: 19h-21h"
    assert tapped(setup, "Kho Thủ Đức", warehouse["seq"]) == "Đã ghi nhận: Kho Thủ Đức"
    assert tapped(setup, "8h-10h", slot["seq"]) == "Không ghi nhận: câu hỏi đã có câu trả lời."
    # And the 14-option question is answered on that page, as a person there would.
    wait_for_park(
        setup.airflow, AnswerToken(CONN_ID, dag_id, run_id, "ask_province", -1, 1, OWNER, "", "", 0)
    )
    answered = requests.patch(
        f"{setup.airflow.url}/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/ask_province/-1/hitlDetails",
        json={"chosen_options": ["Cần Thơ"]},
        headers=setup.airflow.auth_headers,
        timeout=120,
    )
    assert answered.status_code == 200, answered.text

    assert finished(setup, "ahachat_hitl_many_options") == "success"
    for task_id, chosen in (("ask_slot", "19h-21h"), ("ask_warehouse", "Kho Thủ Đức")):
        detail = hitl(setup, "ahachat_hitl_many_options", task_id)
        assert detail["chosen_options"] == [chosen]
        assert detail["responded_by_user"] == {"id": f"ahachat:{OWNER}", "name": f"ahachat:{OWNER}"}
    assert hitl(setup, "ahachat_hitl_many_options", "ask_province")["chosen_options"] == ["Cần Thơ"]
    assert {task: state for task, (state, _) in task_states(setup, "ahachat_hitl_many_options").items()} == {
        "ask_slot": "success",
        "ask_warehouse": "success",
        "ask_province": "success",
    }
