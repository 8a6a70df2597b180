"""
``delivery_mark``: a try whose outcome is unknown for some recipients is settled by the next try,
which looks each of them up and sends only to those the earlier message never reached.

The sandbox's injected 500s come in both kinds a real server produces: processed then failed
(``deliver: true``, the message went out) and failed before processing (it did not). Both end
"unknown" for the first try; with a mark, the second try tells them apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers.dag_helpers import report

from airflow_provider_ahachat.bulk import AhaChatBulkError, BulkRunner, Columns, Ledger
from airflow_provider_ahachat.client import AhaChatClient, RetryPolicy
from airflow_provider_ahachat.exceptions import AhaChatValidationError
from airflow_provider_ahachat.registry import ACTIONS
from airflow_provider_ahachat.sandbox import SandboxServer

MARK = "airflow_delivery"
QUICK_RETRIES = RetryPolicy(backoff_base=0.01, backoff_max=0.05)
CONFIRMED = f"its {MARK} is on the customer"

#: Arguments richer than the registry's examples: a message that sets an attribute of its own too.
MESSAGES: dict[str, dict[str, Any]] = {
    "send_message": {"message": {"messages": [{"text": "Chào bạn!"}], "set_attributes": {"hoi": "roi"}}},
}
#: Every action that carries a delivery mark, by user ID and, where AhaChat has it, by phone.
MARKED = [
    (name, by_phone)
    for name, action in ACTIONS.items()
    if action.marks_with
    for by_phone in ([False, True] if action.by_phone else [False])
]


def run(
    sandbox: SandboxServer, action: str, ledger: Path, audience: list[Any], **options: Any
) -> dict[str, Any]:
    options.setdefault("delivery_mark", MARK)
    # Retries as many as by default, without the default backoff's seconds of waiting.
    with AhaChatClient(sandbox.bot_id, sandbox.token, sandbox.url, retry=QUICK_RETRIES) as client:
        runner = BulkRunner(
            client,
            client.bind(action, MESSAGES.get(action, ACTIONS[action].example())),
            ledger=Ledger(ledger),
            progress_interval=60,
            **options,
        )
        return runner.run(audience)


@pytest.mark.parametrize(("action", "by_phone"), MARKED)
def test_unknown_outcomes_end_neither_lost_nor_doubled(
    sandbox: SandboxServer, tmp_path: Path, action: str, by_phone: bool
) -> None:
    ids = sandbox.generate_users(10)
    audience: list[Any] = [{"phone": sandbox.user(uid)["phone"]} for uid in ids] if by_phone else ids
    # The first recipient's request is processed, then answered 500; the second's is not processed.
    sandbox.configure(fail_next=[{"status": 500, "deliver": True}, {"status": 500, "deliver": False}])
    first = run(sandbox, action, tmp_path, audience, concurrency=1, max_failures=2)
    assert first["outcomes"] == {"delivered": 8, "unknown": 2}
    assert sandbox.outbox_counts() == dict.fromkeys(ids[:1] + ids[2:], 1)

    second = run(sandbox, action, tmp_path, audience)
    assert second["outcomes"] == {"delivered": 10}
    assert sandbox.outbox_counts() == dict.fromkeys(ids, 1)  # the second got theirs, nobody twice
    lines = report(second)
    assert [line["row"] for line in lines if CONFIRMED in line.get("reason", "")] == [1]
    assert second["delivered_in_earlier_tries"] == 9  # eight answered, one found by its mark
    assert second["unknown_checked"] == {"arrived": 1, "not_arrived": 1}
    marks = [sandbox.user(uid)["attributes"][MARK] for uid in ids]
    assert len(set(marks)) == 10  # one value per recipient
    if action == "send_message":  # the message's own set_attributes still arrive
        assert sandbox.user(ids[1])["attributes"]["hoi"] == "roi"


def test_without_a_mark_the_same_unknowns_stay_unknown(sandbox: SandboxServer, tmp_path: Path) -> None:
    ids = sandbox.generate_users(4)
    sandbox.configure(fail_next=[{"status": 500, "deliver": True}, {"status": 500, "deliver": False}])
    run(sandbox, "send_text", tmp_path, ids, concurrency=1, max_failures=2, delivery_mark=None)
    second = run(sandbox, "send_text", tmp_path, ids, max_failures=2, delivery_mark=None)
    assert second["outcomes"] == {"delivered": 2, "unknown": 2} and second["unknown_checked"] == {}
    assert len(sandbox.outbox_counts()) == 3  # the unprocessed one is never reached: lost


def test_a_mark_lookup_that_fails_leaves_the_outcome_unknown_for_the_next_try(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    ids = sandbox.generate_users(3)
    sandbox.configure(fail_next=[{"status": 500, "deliver": False}])
    run(sandbox, "send_text", tmp_path, ids, concurrency=1, max_failures=1)
    assert len(sandbox.outbox_counts()) == 2

    # The lookup of the unknown recipient fails every time it is tried (a GET is retried on 503).
    sandbox.configure(fail_next=[{"status": 503}] * 10)
    with pytest.raises(AhaChatBulkError):
        run(sandbox, "send_text", tmp_path, ids, concurrency=1)
    assert len(sandbox.outbox_counts()) == 2  # not sent blind

    sandbox.configure(fail_next=[])
    third = run(sandbox, "send_text", tmp_path, ids)
    assert third["outcomes"] == {"delivered": 3}
    assert sandbox.outbox_counts() == dict.fromkeys(ids, 1)


def test_the_mark_is_the_ledgers_and_the_recipients(sandbox: SandboxServer, tmp_path: Path) -> None:
    ids = sandbox.generate_users(2)
    run(sandbox, "broadcast_block", tmp_path / "monday", ids)
    monday = sandbox.user(ids[0])["attributes"][MARK]
    assert monday == Ledger(tmp_path / "monday").mark(f"user:{ids[0]}")
    # Another day's run (another ledger) does not take Monday's mark for its own.
    sandbox.configure(fail_next=[{"status": 500, "deliver": False}])
    run(sandbox, "broadcast_block", tmp_path / "tuesday", ids, concurrency=1, max_failures=1)
    tuesday = run(sandbox, "broadcast_block", tmp_path / "tuesday", ids)
    assert tuesday["outcomes"] == {"delivered": 2}
    assert sandbox.outbox_counts() == dict.fromkeys(ids, 2)  # once each day
    assert sandbox.user(ids[0])["attributes"][MARK] != monday


@pytest.mark.parametrize(
    ("action", "options", "expected"),
    [
        ("add_tags", {}, "delivery_mark: the action 'add_tags' messages nobody"),
        ("send_text", {"ledger": None}, "delivery_mark: needs a ledger"),
        ("send_text", {"delivery_mark": "ahachat_sent"}, "delivery_mark: "),
        ("send_text", {"delivery_mark": ""}, "delivery_mark: "),
        ("send_text", {"delivery_mark": 7}, "delivery_mark: "),
    ],
)
def test_a_mark_that_cannot_work_is_refused_before_anything_is_sent(
    sandbox: SandboxServer, tmp_path: Path, action: str, options: dict[str, Any], expected: str
) -> None:
    ids = sandbox.generate_users(2)
    options.setdefault("delivery_mark", MARK)
    ledger = options.pop("ledger", tmp_path)
    # Retries as many as by default, without the default backoff's seconds of waiting.
    with AhaChatClient(sandbox.bot_id, sandbox.token, sandbox.url, retry=QUICK_RETRIES) as client:
        bound = client.bind(action, MESSAGES.get(action, ACTIONS[action].example()))
        with pytest.raises(AhaChatValidationError) as caught:
            BulkRunner(client, bound, ledger=Ledger(ledger) if ledger else None, **options).run(ids)
    assert expected in str(caught.value)
    assert sandbox.stats()["total"] == 0


def test_a_column_named_like_the_mark_makes_its_rows_invalid(sandbox: SandboxServer, tmp_path: Path) -> None:
    ids = sandbox.generate_users(2)
    rows = [{"user_id": ids[0], "order_id": "DH1"}, {"user_id": ids[1], MARK: "mine"}]
    summary = run(sandbox, "broadcast_block", tmp_path, rows, max_failures=1)
    assert summary["outcomes"] == {"delivered": 1, "invalid": 1}
    (line,) = [line for line in report(summary) if line["outcome"] == "invalid"]
    assert f"{MARK}: is the run's delivery_mark attribute" in line["reason"]
    assert sandbox.user(ids[1])["attributes"].get(MARK) is None


def test_the_operator_refuses_a_reserved_mark_at_parse_time() -> None:
    from airflow_provider_ahachat.operators.ahachat import BroadcastBlockOperator

    with pytest.raises(AhaChatValidationError, match="delivery_mark: "):
        BroadcastBlockOperator(task_id="t", block_name="b", recipients=[], delivery_mark="ahachat_token")


def test_a_single_send_refuses_a_mark_it_could_not_check(sandbox: SandboxServer, dag_runner: Any) -> None:
    from airflow.sdk import DAG

    from airflow_provider_ahachat.operators.ahachat import BroadcastBlockOperator

    (uid,) = sandbox.generate_users(1)
    with DAG("single_mark", schedule=None, default_args={"retries": 0}) as dag:
        BroadcastBlockOperator(
            task_id="send",
            ahachat_conn_id="aha",
            block_name="shipping_update",
            user_id=uid,
            delivery_mark=MARK,
        )
    result = dag_runner(dag, {"aha": sandbox.connection_uri})
    assert not result.succeeded
    assert "delivery_mark: works with recipients" in result.summary()
    assert sandbox.stats()["total"] == 0


def test_two_messages_to_one_customer_are_never_resent_blind(sandbox: SandboxServer, tmp_path: Path) -> None:
    (uid,) = sandbox.generate_users(1)
    rows = [{"user_id": uid, "order_id": "DH1"}, {"user_id": uid, "order_id": "DH2"}]
    sandbox.configure(fail_next=[{"status": 500, "deliver": True}, {"status": 500, "deliver": True}])
    per_order = Columns.of(dedupe_on=["order_id"])
    first = run(sandbox, "broadcast_block", tmp_path, rows, concurrency=1, columns=per_order, max_failures=2)
    assert first["outcomes"] == {"unknown": 2}

    second = run(sandbox, "broadcast_block", tmp_path, rows, columns=per_order, max_failures=1)
    # The customer holds DH2's mark: DH2 arrived; DH1's may have, and cannot be told: not resent.
    assert second["outcomes"] == {"delivered": 1, "unknown": 1}
    assert second["unknown_checked"] == {"arrived": 1, "undecided": 1}
    assert sandbox.outbox_counts() == {uid: 2}
    (line,) = [line for line in report(second) if line["outcome"] == "unknown"]
    assert line["row"] == 1 and "another message's of this run" in line["reason"]
