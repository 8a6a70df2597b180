"""The bulk engine against the sandbox over real HTTP: every action, input forms, ledger, pacing."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from helpers.dag_helpers import report

from airflow_provider_ahachat.bulk import (
    AhaChatBulkError,
    BulkRunner,
    Columns,
    Ledger,
    RateLimiter,
    count_recipients,
    pacing,
    parse_row,
    read_recipients,
)
from airflow_provider_ahachat.bulk import runner as runner_module
from airflow_provider_ahachat.bulk.pacing import LATE_ENOUGH
from airflow_provider_ahachat.client import AhaChatClient, RetryPolicy
from airflow_provider_ahachat.exceptions import AhaChatValidationError
from airflow_provider_ahachat.registry import ACTIONS, RECIPIENT_ACTIONS
from airflow_provider_ahachat.sandbox import SandboxServer

LAN = "3824547807572463"
NO_RETRY = RetryPolicy(max_retries=0)


def client_for(sandbox: SandboxServer) -> AhaChatClient:
    return AhaChatClient(sandbox.bot_id, sandbox.token, sandbox.url)


@pytest.fixture
def client(sandbox: SandboxServer) -> Iterator[AhaChatClient]:
    with AhaChatClient(sandbox.bot_id, sandbox.token, sandbox.url, pool_size=16) as c:
        yield c


def runner(client: AhaChatClient, action: str, ledger: Any = None, **options: Any) -> BulkRunner:
    """A runner for ``action``; ``ledger`` is its folder (any path type), or None for no ledger."""
    names = ACTIONS[action].argument_names
    arguments: dict[str, Any] = {name: options.pop(name) for name in names if name in options}
    options.setdefault("progress_interval", 60)
    return BulkRunner(
        client,
        client.bind(action, arguments),
        ledger=Ledger(ledger) if ledger is not None else None,
        **options,
    )


# --------------------------------------------------------------------------- every action


@pytest.mark.parametrize("action", RECIPIENT_ACTIONS)
def test_every_action_reaches_every_recipient_once(
    sandbox: SandboxServer, client: AhaChatClient, action: str
) -> None:
    """Each action of the registry that acts on customers, with its example arguments, for 30 of them."""
    ids = sandbox.generate_users(30)
    summary = runner(client, action, concurrency=8, **ACTIONS[action].example()).run(ids, len(ids))
    assert summary["outcomes"] == {"delivered": 30}, summary
    assert summary["action"] == action and summary["total"] == 30
    paths = [r["path"] for r in sandbox.request_log(limit=100)]
    assert len(paths) == 30 and all(sum(f"/{uid}/" in f"{path}/" for path in paths) == 1 for uid in ids)
    expected = dict.fromkeys(ids, 1) if ACTIONS[action].sends_message else {}
    assert sandbox.outbox_counts() == expected


def test_the_actions_change_each_recipient_as_they_say(sandbox: SandboxServer, client: AhaChatClient) -> None:
    ids = sandbox.generate_users(30)
    cases: list[tuple[str, dict[str, Any]]] = [
        ("add_tags", {"tags": ["loyal", "vip"]}),
        ("remove_tags", {"tags": "vip"}),
        ("add_attributes", {"attributes": {"segment": "A"}}),
        ("reset_attributes", {"names": ["segment"]}),
        ("broadcast_block", {"block_name": "shipping_update", "attributes": {"order_id": "DH1"}}),
    ]
    for action, arguments in cases:
        summary = runner(client, action, concurrency=8, **arguments).run(ids, len(ids))
        assert summary["outcomes"] == {"delivered": 30}, (action, summary)
    for uid in ids:
        user = sandbox.user(uid)
        assert user["tags"] == ["loyal"]
        assert "segment" not in user["attributes"]
        assert user["attributes"]["order_id"] == "DH1"


def test_rows_carry_their_own_attributes_and_phones(sandbox: SandboxServer, client: AhaChatClient) -> None:
    ids = sandbox.generate_users(3)
    rows = [
        {"user_id": ids[0], "order_id": "DH1", "tracking_number": "GHN1"},
        {"phone": "0900000001", "attributes": {"order_id": "DH2"}, "tracking_number": "GHN2"},
        {"user_id": ids[2], "attributes": '{"order_id": "DH3"}'},
    ]
    summary = runner(
        client,
        "broadcast_block",
        block_name="shipping_update",
        attributes={"shop": "Lan Anh", "order_id": "X"},
    ).run(rows)
    assert summary["outcomes"] == {"delivered": 3}
    assert [sandbox.user(uid)["attributes"].get("order_id") for uid in ids] == ["DH1", "DH2", "DH3"]
    assert sandbox.user(ids[1])["attributes"]["tracking_number"] == "GHN2"
    assert {sandbox.user(uid)["attributes"]["shop"] for uid in ids} == {"Lan Anh"}
    by_phone = [r for r in sandbox.request_log(limit=10) if "/phones/send" in r["path"]]
    assert len(by_phone) == 1  # the Broadcast API takes the phone itself: no lookup first


def test_phone_rows_are_looked_up_for_actions_that_need_the_user_id(
    sandbox: SandboxServer, client: AhaChatClient
) -> None:
    ids = sandbox.generate_users(2)
    summary = runner(client, "add_tags", tags="loyal", max_failures=1).run(
        [{"phone": "+84900000000"}, {"phone": "0900000001"}, {"phone": "0911111111"}]
    )
    assert summary["outcomes"] == {"delivered": 2, "failed": 1}
    assert [sandbox.user(uid)["tags"] for uid in ids] == [["loyal"], ["loyal"]]
    (failure,) = summary["first_failures"]
    assert failure["row"] == 3 and failure["recipient"] == "phone +84911111111"
    assert "404" in failure["reason"] or "no user" in failure["reason"]


# --------------------------------------------------------------------------- rows: invalid, duplicates


def test_bad_rows_are_reported_by_row_and_field_and_the_rest_go_out(
    sandbox: SandboxServer, client: AhaChatClient, tmp_path: Path
) -> None:
    ids = sandbox.generate_users(3)
    rows: list[Any] = [
        ids[0],
        {"user_id": ids[1], "phone": "0911111111"},  # both: the user ID wins
        {"phone": "(090) 000"},
        {"user_id": ids[2], "phone_number": "x", "ahachat_block_name": "evil"},
        {"name": "no id"},
        3.5,
        ids[0],
        ids[2],
    ]
    summary = runner(
        client, "broadcast_block", tmp_path, block_name="shipping_update", max_failure_ratio=1
    ).run(rows)
    assert summary["outcomes"] == {"delivered": 3, "invalid": 4, "duplicate": 1}
    lines = report(summary)
    assert [line["outcome"] for line in lines] == [
        "delivered", "delivered", "invalid", "invalid", "invalid", "invalid", "duplicate", "delivered",
    ]  # fmt: skip
    reasons = {line["row"]: line.get("reason", "") for line in lines}
    assert lines[1]["recipient"] == f"user {ids[1]}"
    assert reasons[3].startswith("row 3: phone")
    assert "row 4: " in reasons[4] and "ahachat_block_name" in reasons[4] and "reserved" in reasons[4]
    assert reasons[5] == "no user_id, messenger_user_id or phone in row 5"
    assert reasons[6].startswith("row 6: a recipient is a user ID or a mapping")
    assert sandbox.outbox_counts() == {ids[0]: 1, ids[1]: 1, ids[2]: 1}


def test_parse_row_rules() -> None:
    raw = {"messenger_user_id": 3824547807572463, "city": "Huế", "empty": "", "none": None}
    omit = Columns.of(null_attributes="omit")
    row = parse_row(7, raw, takes_attributes=True, columns=omit)
    assert (row.recipient.user_id, dict(row.attributes), row.key) == (LAN, {"city": "Huế"}, f"user:{LAN}")
    assert row.nulls == ("empty", "none")
    empty = parse_row(7, raw, takes_attributes=True, columns=Columns.of(null_attributes="empty"))
    assert dict(empty.attributes) == {"city": "Huế", "empty": "", "none": ""}
    with pytest.raises(
        AhaChatValidationError, match=r"^empty is empty, none is NULL in row 7: nothing is sent"
    ):
        parse_row(7, raw, takes_attributes=True)
    # Without attributes, NULL columns do not matter; a NULL ID or phone always does.
    assert parse_row(7, raw, takes_attributes=False).attributes == {}
    with pytest.raises(AhaChatValidationError, match=r"^phone is NULL in row 17$"):
        parse_row(17, {"phone": None, "city": "Huế"}, takes_attributes=False)
    with pytest.raises(AhaChatValidationError, match=r"^user_id is empty and phone is NULL in row 3$"):
        parse_row(3, {"user_id": "", "phone": None}, takes_attributes=False)
    # dedupe_on: the message's identity is the recipient and those columns, in the ledger key too.
    per_order = Columns.of(dedupe_on=["order_id"])
    keyed = parse_row(1, {"user_id": LAN, "order_id": 42}, takes_attributes=False, columns=per_order)
    assert keyed.key == f'user:{LAN} ["42"]'
    with pytest.raises(AhaChatValidationError, match=r"^order_id is NULL in row 5 \(a dedupe_on column\)$"):
        parse_row(5, {"user_id": LAN, "order_id": None}, takes_attributes=False, columns=per_order)
    assert parse_row(1, {"user_id": LAN, "city": "Huế"}, takes_attributes=False).attributes == {}
    assert parse_row(1, {"phone": "0908 071 111"}, takes_attributes=False).key == "phone:+84908071111"
    with pytest.raises(AhaChatValidationError, match=r"row 9: attributes: must be an object"):
        parse_row(9, {"user_id": LAN, "attributes": "[1]"}, takes_attributes=True)
    with pytest.raises(AhaChatValidationError, match=r"row 2: .*got bool"):
        parse_row(2, True, takes_attributes=False)


def test_shared_arguments_are_checked_before_any_row(client: AhaChatClient, sandbox: SandboxServer) -> None:
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("add_tags", {"tags": []}, "tags"),
        ("broadcast_block", {"block_name": " "}, "block_name"),
        ("broadcast_block", {"block_name": "b", "attributes": {"AhaChat_Note": "1"}}, "reserved"),
        ("broadcast_block", {"block_name": "b", "message_tag": "PROMO"}, "message_tag"),
        ("send_text", {"text": "x" * 2001}, "text"),
        ("send_message", {"message": {"messages": []}}, "messages"),
        ("reset_attributes", {"names": []}, "names"),
        ("reset_attributes", {"attributes": []}, "attributes"),
        ("explode", {}, "action"),
    ]
    for action, arguments, message in cases:
        with pytest.raises(AhaChatValidationError, match=message):
            client.bind(action, arguments)
    with pytest.raises(AhaChatValidationError) as caught:
        BulkRunner(client, client.bind("add_tags", tags="x"), concurrency=0, max_failure_ratio=2)
    assert "concurrency" in str(caught.value) and "max_failure_ratio" in str(caught.value)
    assert sandbox.stats()["total"] == 0


# --------------------------------------------------------------------------- files


def test_csv_and_jsonl_files_are_streamed(
    sandbox: SandboxServer, client: AhaChatClient, tmp_path: Path
) -> None:
    ids = sandbox.generate_users(4)
    csv_file = tmp_path / "audience.csv"
    csv_file.write_text(
        f"\ufeffuser_id,phone,order_id\n{ids[0]},,DH1\n,0900000001,DH2\n{ids[0]},,DH9\n", encoding="utf-8"
    )
    jsonl_file = tmp_path / "audience.jsonl"
    jsonl_file.write_text(
        f'"{ids[2]}"\n\n{{"user_id": "{ids[3]}", "order_id": "DH4"}}\n{{not json\n', encoding="utf-8"
    )
    assert count_recipients(csv_file) == 3 and count_recipients(jsonl_file) == 3
    assert next(iter(read_recipients(csv_file))) == {"user_id": ids[0], "phone": "", "order_id": "DH1"}

    first = runner(
        client, "broadcast_block", tmp_path / "l1", block_name="shipping_update", max_failure_ratio=1
    )
    summary = first.run(read_recipients(csv_file), 3)
    assert summary["outcomes"] == {"delivered": 2, "duplicate": 1}
    second = runner(
        client, "broadcast_block", tmp_path / "l2", block_name="shipping_update", max_failure_ratio=1
    )
    summary = second.run(read_recipients(jsonl_file), 3)
    assert summary["outcomes"] == {"delivered": 2, "invalid": 1}
    assert summary["first_failures"][0]["reason"] == "row 3: line 4 is not valid JSON"
    assert [sandbox.user(uid)["attributes"].get("order_id") for uid in ids] == ["DH1", "DH2", None, "DH4"]
    with pytest.raises(AhaChatValidationError, match=r"\.csv, \.jsonl"):
        count_recipients(tmp_path / "audience.xlsx")


# --------------------------------------------------------------------------- exactly once across tries


def test_a_second_try_skips_who_was_reached_and_retries_who_failed(
    sandbox: SandboxServer, client: AhaChatClient, tmp_path: Path
) -> None:
    ids = sandbox.generate_users(20)
    audience = [*ids, "9999999999999999"]
    with pytest.raises(AhaChatBulkError) as caught:
        runner(client, "send_text", tmp_path, text="Đơn đã giao").run(audience)
    first = caught.value.summary
    assert first["outcomes"] == {"delivered": 20, "failed": 1}
    assert "1 of 21 rows were not delivered, more than max_failures=0 allow" in str(caught.value)
    assert "row 21 user 9999999999999999" in str(caught.value)

    sandbox.add_user({"messenger_user_id": "9999999999999999", "last_interaction_minutes_ago": 1})
    second = runner(client, "send_text", tmp_path, text="Đơn đã giao").run(audience)
    assert second["outcomes"] == {"delivered": 21}
    assert second["delivered_in_earlier_tries"] == 20
    assert set(sandbox.outbox_counts().values()) == {1} and len(sandbox.outbox_counts()) == 21
    lines = report(second)
    assert sum(1 for line in lines if line.get("earlier_try")) == 20


def test_unknown_outcomes_are_not_resent_unless_asked(
    sandbox: SandboxServer, client: AhaChatClient, tmp_path: Path
) -> None:
    ids = sandbox.generate_users(10)
    sandbox.configure(fail_next=[{"status": 500, "deliver": True}, {"status": 500, "deliver": False}])
    with pytest.raises(AhaChatBulkError):
        runner(client, "send_text", tmp_path, text="Hi", concurrency=1).run(ids)
    assert len(sandbox.outbox_counts()) == 9  # the second 500 was not processed

    again = runner(client, "send_text", tmp_path, text="Hi", max_failures=2).run(ids)
    assert again["outcomes"] == {"delivered": 8, "unknown": 2}
    assert all("not resent" in f["reason"] for f in report(again) if f["outcome"] == "unknown")
    assert max(sandbox.outbox_counts().values()) == 1

    resent = runner(client, "send_text", tmp_path, text="Hi", resend_unknown=True).run(ids)
    assert resent["outcomes"] == {"delivered": 10}
    counts = sandbox.outbox_counts()
    assert sorted(counts.values()) == [1] * 9 + [2]  # the user whose 500 was processed got it twice
    assert counts[ids[0]] == 2


def test_actions_that_message_nobody_are_safe_to_repeat(
    sandbox: SandboxServer, client: AhaChatClient, tmp_path: Path
) -> None:
    ids = sandbox.generate_users(5)
    sandbox.configure(fail_next=[{"status": 500, "deliver": True}] * 3)
    summary = runner(client, "add_tags", tmp_path, tags="t", concurrency=1).run(ids)
    assert summary["outcomes"] == {"delivered": 5} and summary["retries"] == {"500": 3}


def test_an_unknown_outcome_of_a_tag_is_resent_on_the_next_try(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    ids = sandbox.generate_users(3)
    sandbox.configure(latency_ms=400)  # processed, then answered too late
    with AhaChatClient(sandbox.bot_id, sandbox.token, sandbox.url, read_timeout=0.1, retry=NO_RETRY) as slow:
        first = runner(slow, "add_tags", tmp_path, tags="t", max_failure_ratio=1).run(ids)
    assert first["outcomes"] == {"unknown": 3}
    sandbox.configure(latency_ms=0)
    again = runner(client_for(sandbox), "add_tags", tmp_path, tags="t").run(ids)
    # Unlike a message, a tag is safe to set twice: the next try sends it again, and it lands.
    assert again["outcomes"] == {"delivered": 3} and again["delivered_in_earlier_tries"] == 0
    assert all(sandbox.user(uid)["tags"] == ["t"] for uid in ids)


class SlotsTaken(RateLimiter):
    """A run's rate limiter that keeps the slots its requests went on."""

    def __init__(self, rate: float | None) -> None:
        super().__init__(rate)
        self.taken: list[float] = []
        self.pauses_at: list[float] = []

    def slow_down(self, retry_after: float | None) -> None:
        super().slow_down(retry_after)
        self.pauses_at.append(time.monotonic())  # after: a slot from before is earlier than this

    def _stale(self, due: float) -> bool:
        stale = super()._stale(due)
        if not stale:
            self.taken.append(due)
        return stale


def test_a_429_holds_every_worker_until_retry_after(sandbox: SandboxServer, client: AhaChatClient) -> None:
    ids = sandbox.generate_users(40)
    sandbox.configure(retry_after=1, fail_next=[{"status": 429}])
    limiter = SlotsTaken(None)
    summary = runner(client, "add_tags", tags="t", concurrency=8, limiter=limiter).run(ids)
    assert summary["outcomes"] == {"delivered": 40} and summary["rate_limit_pauses"] >= 1
    assert len(limiter.pauses_at) == 1
    paused = limiter.pauses_at[0]
    # A slot taken before the client read the 429 may still go (it was already on its way); every
    # slot taken after it comes once Retry-After has passed: nobody went during the pause.
    assert not [slot for slot in limiter.taken if paused <= slot < paused + 0.9]
    assert [slot for slot in limiter.taken if slot >= paused + 0.9]  # and the rest went after it
    # The server saw the same: the last requests came a second after the refusal at the least.
    log = sandbox.request_log(limit=100)
    refused = next(datetime.fromisoformat(r["time"]).timestamp() for r in log if r["status"] == 429)
    assert max(datetime.fromisoformat(r["time"]).timestamp() for r in log) - refused >= 0.9


def test_the_ledger_works_on_object_storage(sandbox: SandboxServer, client: AhaChatClient) -> None:
    # fsspec's in-memory filesystem stands in for S3 or GCS: it cannot append either.
    from upath import UPath

    folder = UPath("memory://ledgers/test_object_storage")
    ids = sandbox.generate_users(12)
    first = runner(client, "send_text", folder, text="Hi", concurrency=4)
    assert not first.claims.each  # object storage: claimed a batch at a time
    first.run(ids[:6])
    summary = runner(client, "send_text", folder, text="Hi", concurrency=4).run(ids)
    assert summary["outcomes"] == {"delivered": 12} and summary["delivered_in_earlier_tries"] == 6
    assert summary["report"].endswith("ledgers/test_object_storage/report.jsonl")
    assert max(sandbox.outbox_counts().values()) == 1
    journals = [p.name for p in folder.iterdir() if p.name.startswith("journal-")]
    assert len(journals) >= 4  # object storage cannot append: one object per write
    text = "".join((folder / name).read_text() for name in journals)
    assert sandbox.token not in text and ids[0] in text


# --------------------------------------------------------------------------- pacing


def test_the_rate_limit_holds_for_the_whole_run(
    sandbox: SandboxServer, client: AhaChatClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = sandbox.generate_users(120)
    # The run builds its own limiter from rate_limit=40, as the operators' runs do; this one keeps
    # the slots it gives.
    monkeypatch.setattr(runner_module, "RateLimiter", SlotsTaken)
    run = runner(client, "add_tags", tags="t", concurrency=16, rate_limit=40)
    limiter = run.limiter
    assert isinstance(limiter, SlotsTaken) and limiter.limit == 40
    summary = run.run(ids)
    assert summary["outcomes"] == {"delivered": 120}
    # Every request went on a slot of its own, and the slots are 1/40 s apart.
    slots = sorted(limiter.taken)
    assert len(slots) == 120
    assert min(b - a for a, b in itertools.pairwise(slots)) >= 1 / 40 - 1e-9
    # Seen by the server: 120 requests, which took at least 119 slots' time (a busy machine only
    # makes them later; when they arrive within the run is the machine's scheduling, not the pace).
    times = sorted(datetime.fromisoformat(r["time"]).timestamp() for r in sandbox.request_log(limit=200))
    assert len(times) == 120
    assert times[-1] - times[0] >= 119 / 40 * 0.95


@pytest.mark.parametrize("rate", [5, 40, 200, 1000])
@pytest.mark.parametrize("stall", [0.3, 1.0, 30.0])
def test_workers_woken_late_by_a_stall_take_new_slots_and_stay_spaced(
    monkeypatch: pytest.MonkeyPatch, rate: float, stall: float
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(pacing.time, "monotonic", lambda: clock[0])
    limiter = RateLimiter(rate)
    slots = [limiter._reserve() for _ in range(16)]  # 16 workers wait for their turns
    clock[0] = slots[-1] + stall  # the process stalls; they all wake now, together
    went = [slot for slot in slots if not limiter._stale(slot)]
    # Only the slots of the last LATE_ENOUGH (one slot at the least) may still go: no burst of 16.
    assert len(went) <= max(1, LATE_ENOUGH * rate) + 1
    again = [limiter._reserve() for _ in range(16 - len(went))]
    assert again[0] >= clock[0]  # the late ones start again from now, one slot apart
    assert all(b - a == pytest.approx(1 / rate) for a, b in itertools.pairwise(again))


def test_a_worker_woken_a_little_late_keeps_its_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(pacing.time, "monotonic", lambda: clock[0])
    limiter = RateLimiter(200)
    due = limiter._reserve()
    clock[0] = due + LATE_ENOUGH * 0.9  # the scheduler's ordinary noise: sent, no hole left
    assert not limiter._stale(due)
    clock[0] = due + LATE_ENOUGH * 1.1
    assert limiter._stale(due)
    assert not RateLimiter(None)._stale(due - 60)  # without a limit, no slot is ever too old


def test_a_worker_woken_late_goes_on_a_new_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(pacing.time, "monotonic", lambda: clock[0])

    class Stalled:
        """A worker's wait that ends a second late, as after a stall of the machine."""

        def __init__(self, stopped: bool) -> None:
            self.stopped = stopped

        def wait(self, seconds: float) -> bool:
            clock[0] += seconds + 1.0
            return self.stopped

        def is_set(self) -> bool:
            return self.stopped

    limiter = RateLimiter(40)
    limiter._reserve(), limiter._reserve()  # two workers ahead: this one's slot is 50 ms away
    limiter.acquire(Stalled(stopped=False))  # type: ignore[arg-type]
    # Its slot (1000.05) was a second old when it woke: it took the next one, which is now.
    assert limiter._next == pytest.approx(clock[0] + 1 / 40)
    # A stopped run takes no new slot: the caller gives up instead.
    taken = limiter._next
    limiter.acquire(Stalled(stopped=True))  # type: ignore[arg-type]
    assert limiter._next == pytest.approx(taken + 1 / 40)


def test_a_429_pauses_every_worker_together() -> None:
    limiter = RateLimiter(100)
    started = time.monotonic()
    limiter.slow_down(0.3)
    assert limiter.rate == pytest.approx(80)
    waited: list[float] = []

    def worker() -> None:
        limiter.acquire()
        waited.append(time.monotonic() - started)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert min(waited) >= 0.29  # nobody went before Retry-After had passed
    for _ in range(30):
        limiter.succeeded()
    assert limiter.rate == 100  # and the pace climbs back


def test_rate_limited_by_the_server_everyone_slows_and_all_arrive_once(
    sandbox: SandboxServer, client: AhaChatClient
) -> None:
    # More than the sandbox's burst of a second's worth plus what it lets through while they are
    # sent, however slow the machine: some of them must be answered 429.
    ids = sandbox.generate_users(200)
    sandbox.configure(rate_limit=50, retry_after=0)
    summary = runner(client, "broadcast_block", block_name="shipping_update", concurrency=16).run(ids)
    assert summary["outcomes"] == {"delivered": 200}
    assert summary["retries"].get("429", 0) > 0
    assert sandbox.outbox_counts() == dict.fromkeys(ids, 1)


# --------------------------------------------------------------------------- stopping, fatal errors, dry run


def test_a_refused_token_stops_the_run_at_once(sandbox: SandboxServer, tmp_path: Path) -> None:
    ids = sandbox.generate_users(200)
    with (
        AhaChatClient(sandbox.bot_id, "wrong-token", sandbox.url) as bad,
        pytest.raises(AhaChatBulkError) as caught,
    ):
        runner(bad, "add_tags", tmp_path, tags="t", concurrency=4).run(ids)
    summary = caught.value.summary
    assert set(summary["outcomes"]) == {"not_sent"} and summary["outcomes"]["not_sent"] == 200
    assert sandbox.stats()["total"] <= 8  # the requests already in flight, no more
    assert "stopped" in str(caught.value) and "401" in str(caught.value)
    assert "wrong-token" not in str(caught.value)


def test_a_refused_token_stops_the_workers_while_the_producer_is_busy(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    # The thread reading the input is busy (a slow query, a large file) while the workers send
    # what it queued: the first refusal must stop them, not wait until that thread reads it.
    ids = sandbox.generate_users(40)

    def slow_input() -> Iterator[str]:
        # Two batches of four: the queue (twice the workers) takes them without blocking, so the
        # producer reads no result until its input goes on.
        yield from ids[:8]
        time.sleep(1.5)
        yield from ids[8:]

    with (
        AhaChatClient(sandbox.bot_id, "wrong-token", sandbox.url) as bad,
        pytest.raises(AhaChatBulkError) as caught,
    ):
        runner(bad, "add_tags", tmp_path, tags="t", concurrency=4).run(slow_input())
    assert caught.value.summary["outcomes"] == {"not_sent": 40}, caught.value.summary
    assert sandbox.stats()["total"] <= 4  # the requests in flight at the refusal, none queued after


def test_stop_finishes_what_is_in_flight_and_a_rerun_completes(
    sandbox: SandboxServer, client: AhaChatClient, tmp_path: Path
) -> None:
    ids = sandbox.generate_users(300)
    sandbox.configure(latency_ms=20)
    first = runner(client, "send_text", tmp_path, text="Hi", concurrency=4)
    threading.Timer(0.4, first.stop).start()
    with pytest.raises(AhaChatBulkError, match="stopped part-way") as caught:
        first.run(ids)
    outcomes = caught.value.summary["outcomes"]
    assert set(outcomes) == {"delivered", "not_sent"} and 0 < outcomes["delivered"] < 300
    assert len(sandbox.outbox_counts()) == outcomes["delivered"]

    second = runner(client, "send_text", tmp_path, text="Hi", concurrency=8).run(ids)
    assert second["outcomes"] == {"delivered": 300}
    assert second["delivered_in_earlier_tries"] == outcomes["delivered"]
    assert sandbox.outbox_counts() == dict.fromkeys(ids, 1)


def test_dry_run_sends_nothing_and_shows_what_it_would_send(
    sandbox: SandboxServer, client: AhaChatClient, tmp_path: Path
) -> None:
    ids = sandbox.generate_users(5)
    rows = [{"user_id": uid, "order_id": f"DH{i}"} for i, uid in enumerate(ids)] + [{"phone": "12"}]
    summary = runner(
        client, "broadcast_block", tmp_path, block_name="shipping_update", dry_run=True, max_failure_ratio=1
    ).run(rows)
    assert sandbox.stats()["total"] == 0 and sandbox.outbox() == []
    assert summary["dry_run"] is True and summary["would_send"] == 5
    assert summary["outcomes"] == {"would_send": 5, "invalid": 1}
    sample = summary["sample_requests"][0]
    assert sample["request"] == f"POST /api/bots/{sandbox.bot_id}/users/{ids[0]}/send"
    assert sample["query"]["order_id"] == "DH0" and sample["query"]["ahachat_block_name"] == "shipping_update"
    assert sandbox.token not in json.dumps(summary)
    assert summary["report"].endswith("dry-run.jsonl")
    assert not list(tmp_path.glob("journal-*"))  # a dry run claims nobody
    # ... and a real run afterwards still sends to everyone.
    real = runner(client, "broadcast_block", tmp_path, block_name="shipping_update").run(rows[:5])
    assert real["outcomes"] == {"delivered": 5}


def test_progress_is_logged_with_rate_and_eta(
    sandbox: SandboxServer, client: AhaChatClient, caplog: pytest.LogCaptureFixture
) -> None:
    ids = sandbox.generate_users(40)
    sandbox.configure(latency_ms=10)
    caplog.set_level("INFO", logger="airflow_provider_ahachat.bulk")
    runner(client, "add_tags", tags="t", concurrency=2, progress_interval=0.1).run(ids, len(ids))
    lines = [r.getMessage() for r in caplog.records if "AhaChat add_tags:" in r.getMessage()]
    assert len(lines) >= 2
    assert any("left" in line and "requests/s" in line for line in lines[:-1])
    assert lines[-1].startswith("AhaChat add_tags: 40 / 40 (100.0%) done") and "40 delivered" in lines[-1]


def test_a_local_object_storage_path_appends_to_one_journal(
    sandbox: SandboxServer, client: AhaChatClient, tmp_path: Path
) -> None:
    from airflow.sdk import ObjectStoragePath

    folder = ObjectStoragePath(f"file://{tmp_path}/ledger")
    ids = sandbox.generate_users(6)
    runner(client, "add_tags", folder, tags="t", concurrency=2).run(ids)
    journals = list((tmp_path / "ledger").glob("journal-*.jsonl"))
    assert len(journals) == 1
    records = [json.loads(line) for line in journals[0].read_text().splitlines()]
    # Each recipient claimed on their own, just before their request, then their outcome.
    assert all(len(r["c"]) == 1 for r in records if "c" in r)
    claimed = [key for r in records if "c" in r for key in r["c"]]
    for key in claimed:
        claim = records.index({"c": [key]})
        assert any(r.get("k") == key for r in records[claim + 1 :])
    assert sorted(claimed) == sorted(f"user:{uid}" for uid in ids)
    assert sorted(r["k"] for r in records if r.get("o") == "delivered") == sorted(claimed)


def test_an_input_that_breaks_part_way_stops_sending_and_a_rerun_resumes(
    sandbox: SandboxServer, client: AhaChatClient, tmp_path: Path
) -> None:
    ids = sandbox.generate_users(100)

    def rows() -> Iterator[str]:
        yield from ids[:60]
        raise OSError("the export file was truncated")

    with pytest.raises(OSError, match="truncated"):
        runner(client, "send_text", tmp_path, text="Hi", concurrency=4).run(rows())
    reached = set(sandbox.outbox_counts())
    time.sleep(0.3)
    assert set(sandbox.outbox_counts()) == reached  # nothing more went out after the error
    assert len(reached) <= 60

    again = runner(client, "send_text", tmp_path, text="Hi", concurrency=4).run(ids)
    assert again["outcomes"] == {"delivered": 100}
    assert again["delivered_in_earlier_tries"] == len(reached)
    assert sandbox.outbox_counts() == dict.fromkeys(ids, 1)


def test_failure_limits_apply_only_when_given(sandbox: SandboxServer, client: AhaChatClient) -> None:
    ids = [*sandbox.generate_users(19), "9999999999999999"]  # one unknown user in twenty: 5%
    with pytest.raises(AhaChatBulkError, match="more than max_failures=0 allow"):
        runner(client, "add_tags", tags="t").run(ids)  # neither limit: any failure fails
    assert runner(client, "add_tags", tags="t", max_failure_ratio=0.05).run(ids)["outcomes"]["failed"] == 1
    assert runner(client, "add_tags", tags="t", max_failures=1).run(ids)["outcomes"]["failed"] == 1
    with pytest.raises(AhaChatBulkError, match=r"more than max_failure_ratio=0\.04 allow"):
        runner(client, "add_tags", tags="t", max_failure_ratio=0.04).run(ids)
    with pytest.raises(AhaChatBulkError, match=r"max_failures=5 and max_failure_ratio=0\.01"):
        runner(client, "add_tags", tags="t", max_failures=5, max_failure_ratio=0.01).run(ids)


def test_only_the_protocol_says_whether_a_path_is_local(tmp_path: Path) -> None:
    from airflow.sdk import ObjectStoragePath
    from upath import UPath

    from airflow_provider_ahachat.bulk import local_path

    assert local_path(tmp_path) == tmp_path
    assert local_path(ObjectStoragePath(f"file://{tmp_path}/ledger")) == tmp_path / "ledger"
    # Under older universal_pathlib releases these are pathlib.Path subclasses too: never local.
    assert local_path(UPath("memory://ledgers/x")) is None
    assert local_path(ObjectStoragePath("s3://aws_default@bucket/ledger")) is None
    assert not Ledger(UPath("memory://ledgers/x")).appends


def test_a_read_timeout_after_sending_is_unknown_and_not_resent(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    ids = sandbox.generate_users(4)
    sandbox.configure(latency_ms=400)  # AhaChat processes the message, then answers too late
    with AhaChatClient(sandbox.bot_id, sandbox.token, sandbox.url, read_timeout=0.1) as slow:
        summary = runner(slow, "send_text", tmp_path, text="Hi", max_failure_ratio=1).run(ids)
    assert summary["outcomes"] == {"unknown": 4} and summary["retries"] == {}
    assert {f["outcome"] for f in summary["first_failures"]} == {"unknown"}
    assert all(
        "did not answer" in f["reason"] and "outcome is unknown" in f["reason"]
        for f in summary["first_failures"]
    )
    deadline = time.monotonic() + 5  # the sandbox delivers once its latency has passed
    while len(sandbox.outbox_counts()) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sandbox.outbox_counts() == dict.fromkeys(ids, 1)  # each was sent once, and only once

    sandbox.configure(latency_ms=0)
    with AhaChatClient(sandbox.bot_id, sandbox.token, sandbox.url) as fast:
        again = runner(fast, "send_text", tmp_path, text="Hi", max_failure_ratio=1).run(ids)
    assert again["outcomes"] == {"unknown": 4}  # not resent on the next try either
    assert sandbox.outbox_counts() == dict.fromkeys(ids, 1)


def test_a_later_run_removes_the_index_folders_that_killed_runs_left(tmp_path: Path) -> None:
    """
    A run's index folder is locked by its process: one killed outright leaves its folder unlocked,
    and the next run removes it; a live run's folder, and a recent one without a lock, stay.
    """
    import os
    import signal
    import subprocess
    import sys

    from airflow_provider_ahachat.bulk.index import UNLOCKED_AFTER, RunIndex

    script = (
        "import sys, time\n"
        "from airflow_provider_ahachat.bulk.index import RunIndex\n"
        "index = RunIndex(sys.argv[1])\n"
        "print(index.folder, flush=True)\n"
        "time.sleep(600)\n"
    )
    runs = [
        subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    try:
        killed, alive, also_killed = (Path(str(run.stdout.readline()).strip()) for run in runs if run.stdout)
        for run in (runs[0], runs[2]):
            os.kill(run.pid, signal.SIGKILL)
            run.wait(30)
        old, fresh = tmp_path / "ahachat-bulk-from-0.4", tmp_path / "ahachat-bulk-just-made"
        for folder in (old, fresh, tmp_path / "not-an-index"):
            folder.mkdir()
            (folder / "index.sqlite").write_text("rows")
        past = time.time() - UNLOCKED_AFTER - 60
        os.utime(old, (past, past))
        assert killed.exists() and also_killed.exists()

        index = RunIndex(str(tmp_path))  # a later try, or any other run
        assert not killed.exists() and not also_killed.exists() and not old.exists()
        assert alive.exists() and fresh.exists() and (tmp_path / "not-an-index").exists()
        assert Path(index.folder).exists()
        index.close()
        assert not Path(index.folder).exists()
    finally:
        runs[1].kill()
        runs[1].wait(30)
    RunIndex(str(tmp_path)).close()  # the live run was killed too: the next run removes its folder
    assert not alive.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ahachat-bulk-just-made", "not-an-index"]
