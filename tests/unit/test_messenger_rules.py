"""
Messenger as it is in December 2026 (issue 22): the tags Meta retired are refused before anything is
sent, the default sends no tag, Meta's refusals are recognised in every shape AhaChat may pass them
on, and a customer outside the 24-hour window is an outcome of its own.

Against a recording server that answers Meta's errors in many shapes, at many statuses, for every
kind of message (the class of the answer, not one example), and against the sandbox in its 2026
mode, with the operators inside Airflow (``dag.test()``).
"""

from __future__ import annotations

import datetime
import json
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.dag_helpers import CONN, SHOP, new_dag, report, run_with_ledger, run_without_token
from helpers.recording_server import RecordingServer, Reply
from helpers.window_helpers import BAO, SINGLE_SENDS, ThirdOutside, many_operator

from airflow_provider_ahachat.client import AhaChatClient, RetryPolicy
from airflow_provider_ahachat.exceptions import (
    AhaChatAPIError,
    AhaChatInvalidRequestError,
    AhaChatMessageTagRefusedError,
    AhaChatOutsideWindowError,
    AhaChatRecipientUnavailableError,
    AhaChatValidationError,
)
from airflow_provider_ahachat.models import MessageTag
from airflow_provider_ahachat.sandbox import SandboxServer
from airflow_provider_ahachat.sandbox.server import connection_uri
from airflow_provider_ahachat.transfers.sql_to_ahachat import SqlToAhaChatOperator

TOKEN = "0f3c9a7e5b1d4f2a8c6e0b9d7f5a3c1e2b4d6f8a0c2e4b6d8f0a2c4e6b8d0f2a"
BOT = "12404829"
USER = "3824547807572463"
LAN = "3824547807572463"  # wrote 30 minutes ago
HUNG = "2958174603928174"  # wrote 8 days ago
#: Retries a misread refusal would get: the test would see more than one request.
RETRYING = RetryPolicy(max_retries=3, backoff_base=0.01, backoff_max=0.02, max_retry_time=5)

RETIRED = ("CONFIRMED_EVENT_UPDATE", "POST_PURCHASE_UPDATE", "ACCOUNT_UPDATE", "NON_PROMOTIONAL_SUBSCRIPTION")
SPELLINGS: dict[str, Callable[[str], str]] = {
    "upper": str.upper,
    "lower": str.lower,
    "title": str.title,
    "padded": lambda tag: f"  {tag.swapcase()} ",
}
WHY = {
    "CONFIRMED_EVENT_UPDATE": "Meta retired it on 27 April 2026",
    "POST_PURCHASE_UPDATE": "Meta retired it on 27 April 2026",
    "ACCOUNT_UPDATE": "Meta retired it on 27 April 2026",
    "NON_PROMOTIONAL_SUBSCRIPTION": (
        "Meta has allowed it only for pages in its News Page Index since 4 March 2020"
    ),
}


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    srv = RecordingServer().start()
    yield srv
    srv.stop()


def tag_sent(request: Any) -> str | None:
    return dict(request.query).get("ahachat_message_tag")


# ------------------------------------------------------------ 1. Meta's refusals, every shape

#: Meta's three refusals: its text and its error object.
REFUSALS: dict[str, tuple[str, dict[str, Any]]] = {
    "outside_window": (
        "(#10) This message is sent outside of allowed window",
        {"code": 10, "error_subcode": 2018278},
    ),
    "unavailable": ("(#551) This person isn't available right now", {"code": 551, "error_subcode": 1545041}),
    "tag": ("(#100) Invalid parameter", {"code": 100}),
}


def meta_object(kind: str) -> dict[str, Any]:
    text, codes = REFUSALS[kind]
    return {"message": text, "type": "OAuthException", **codes, "fbtrace_id": "AxY3kfH2b9Lz"}


#: Every shape AhaChat may pass Meta's refusal on in: its text or Meta's object, in ``message``,
#: ``result`` or ``error``, nested, or as a JSON string, or a body that is not JSON at all.
SHAPES: dict[str, Callable[[str], Any]] = {
    "message": lambda kind: {"success": False, "message": REFUSALS[kind][0]},
    "result": lambda kind: {"success": False, "result": REFUSALS[kind][0]},
    "error_text": lambda kind: {"success": False, "error": REFUSALS[kind][0]},
    "meta_object": lambda kind: {"error": meta_object(kind)},
    "wrapped_meta_object": lambda kind: {
        "success": False,
        "message": "Facebook API error",
        "error": meta_object(kind),
    },
    "meta_as_a_json_string": lambda kind: {
        "success": False,
        "result": json.dumps({"error": meta_object(kind)}),
    },
    "in_a_sentence": lambda kind: {"success": False, "message": f"Gửi tin thất bại: {REFUSALS[kind][0]}."},
    "codes_only": lambda kind: {"success": False, "error": REFUSALS[kind][1]},
    "nested_deeper": lambda kind: {"success": False, "data": {"error": {"error": meta_object(kind)}}},
    "plain_text": lambda kind: REFUSALS[kind][0].encode(),
}
STATUSES = (200, 400, 422, 500, 503)

#: Every kind of message, each carrying ``tag`` where it can (only a broadcast carries a tag).
SENDS: dict[str, Callable[[AhaChatClient, str | None], Any]] = {
    "broadcast_by_user": lambda c, tag: c.run(
        "broadcast_block", {"block_name": "welcome", "message_tag": tag}, user_id=USER
    ),
    "broadcast_by_phone": lambda c, tag: c.run(
        "broadcast_block", {"block_name": "welcome", "message_tag": tag}, phone="0908 071 111"
    ),
    "text": lambda c, tag: c.run("send_text", {"text": "Đơn hàng của bạn đã được giao."}, user_id=USER),
    "dynamic": lambda c, tag: c.run(
        "send_message", {"message": {"messages": [{"text": "Chào bạn!"}]}}, user_id=USER
    ),
}


def refusal_reply(shape: str, kind: str, status: int) -> Reply:
    body = SHAPES[shape](kind)
    if isinstance(body, bytes):
        return Reply(status=status, body=body, headers={"Content-Type": "text/plain; charset=utf-8"})
    if status == 200:
        body = {**body, "success": False}  # a 2xx is a refusal only when it says so
    return Reply(status=status, body=body)


@pytest.mark.parametrize("status", STATUSES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", REFUSALS)
def test_metas_refusals_are_recognised_in_every_shape_at_every_status(
    server: RecordingServer, kind: str, shape: str, status: int
) -> None:
    if status == 200 and shape == "plain_text":
        pytest.skip("a 2xx that is not JSON is accepted: the Broadcast API's answer is not documented")
    server.default = refusal_reply(shape, kind, status)
    # A page whose connection still allows a retired tag, as a tagged message to refuse.
    with AhaChatClient(
        BOT, TOKEN, server.url, retry=RETRYING, message_tags=["HUMAN_AGENT", "ACCOUNT_UPDATE"]
    ) as client:
        for send, tag in [(name, "HUMAN_AGENT") for name in SENDS] + [
            ("broadcast_by_user", "ACCOUNT_UPDATE")
        ]:
            server.requests.clear()
            with pytest.raises(AhaChatAPIError) as info:
                SENDS[send](client, tag)
            error = info.value
            seen = f"{send}: {type(error).__name__}: {error}; requests: {[r.path for r in server.requests]}"
            assert len(server.requests) == 1, f"a refusal is never retried; {seen}"
            assert error.status == status and not error.outcome_unknown, seen
            assert TOKEN not in str(error)
            tagged = tag_sent(server.requests[0])
            if kind == "outside_window":
                assert type(error) is AhaChatOutsideWindowError, (send, error)
                when = (
                    "7 days ago, past what HUMAN_AGENT allows" if tagged == "HUMAN_AGENT" else "24 hours ago"
                )
                assert f"who last wrote more than {when}" in str(error)
                assert "Meta allows a standard message (no tag) only within 24 hours" in str(error)
            elif kind == "unavailable":
                assert type(error) is AhaChatRecipientUnavailableError, (send, error)
                assert isinstance(error, AhaChatOutsideWindowError)  # unreachable now, the same outcome
                assert "isn't available right now" in str(error)
            elif tagged is not None:
                assert type(error) is AhaChatMessageTagRefusedError, (send, error)
                assert f"Messenger refused the message tag {tagged}" in str(error)
                assert "not a bad parameter" in str(error)
                if tagged == "ACCOUNT_UPDATE":
                    assert "Meta retired it on 27 April 2026" in str(error)
            else:  # (#100) to a request without a tag: invalid, but not a tag's fault
                assert type(error) is AhaChatInvalidRequestError, (send, error)
                assert "refused the request as invalid" in str(error)


#: Answers that look alike but are not Messenger's window, availability or tag refusals.
NOT_REFUSALS: list[tuple[str, int, Any, type[Exception]]] = [
    ("permission_error", 400, {"success": False, "error": {"message": "(#10) Application does not have "
     "permission for this action", "type": "OAuthException", "code": 10}}, AhaChatInvalidRequestError),
    ("no_matching_user", 400, {"success": False, "message": "(#100) No matching user found"},
     AhaChatInvalidRequestError),
    ("subcode_of_another_100", 400, {"error": {"message": "(#100) Invalid parameter", "code": 100,
     "error_subcode": 2018001, "type": "OAuthException"}}, AhaChatInvalidRequestError),
    ("ahachats_own_code", 500, {"success": False, "code": 10, "message": "lỗi máy chủ"}, AhaChatAPIError),
    ("unknown_tag_in_ahachats_words", 400, {"success": False, "message": "unknown tag"},
     AhaChatInvalidRequestError),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "status", "body", "expected"), NOT_REFUSALS, ids=[c[0] for c in NOT_REFUSALS]
)
def test_what_only_looks_like_a_refusal_is_not_one(
    server: RecordingServer, case: str, status: int, body: Any, expected: type[Exception]
) -> None:
    server.default = Reply(status=status, body=body)
    with AhaChatClient(BOT, TOKEN, server.url, retry=RETRYING) as client, pytest.raises(expected) as info:
        client.run("broadcast_block", {"block_name": "welcome", "message_tag": "HUMAN_AGENT"}, user_id=USER)
    assert not isinstance(info.value, AhaChatOutsideWindowError | AhaChatMessageTagRefusedError)


def test_a_success_that_mentions_a_code_is_a_success(server: RecordingServer) -> None:
    server.default = Reply(body={"success": True, "result": "Sent; earlier (#10) errors were retried"})
    with AhaChatClient(BOT, TOKEN, server.url) as client:
        assert (
            client.run("broadcast_block", {"block_name": "welcome"}, user_id=USER).data
            == "Sent; earlier (#10) errors were retried"
        )


# ------------------------------------------------------------ 2. tags: none by default, retired refused


@pytest.mark.parametrize("tag", RETIRED)
@pytest.mark.parametrize("spelling", SPELLINGS)
def test_a_retired_tag_in_any_case_is_refused_and_nothing_is_sent(
    server: RecordingServer, tag: str, spelling: str
) -> None:
    given = SPELLINGS[spelling](tag)
    with AhaChatClient(BOT, TOKEN, server.url) as client:
        for way in ({"user_id": USER}, {"phone": "0908071111"}):
            with pytest.raises(AhaChatValidationError) as info:
                client.run("broadcast_block", {"block_name": "welcome", "message_tag": given}, **way)
            assert f"message_tag: Messenger refuses the message tag {tag}: {WHY[tag]}" in str(info.value)
            assert "Instead, send without a tag" in str(info.value)
            with pytest.raises(AhaChatValidationError, match=WHY[tag]):
                client.bind("broadcast_block", block_name="welcome", message_tag=given)  # a bulk run's check
    assert server.requests == []


def _constructors() -> dict[str, Callable[[Any], Any]]:
    from airflow_provider_ahachat.notifications.ahachat import AhaChatNotifier
    from airflow_provider_ahachat.notifications.hitl import AhaChatHITLNotifier
    from airflow_provider_ahachat.operators.ahachat import BroadcastBlockOperator
    from airflow_provider_ahachat.operators.hitl import (
        AhaChatApprovalOperator,
        AhaChatHITLBranchOperator,
        AhaChatHITLOperator,
    )

    return {
        "broadcast": lambda tag: BroadcastBlockOperator(
            task_id="b", block_name="welcome", user_id=USER, message_tag=tag
        ),
        "broadcast_many": lambda tag: BroadcastBlockOperator(
            task_id="m", block_name="welcome", recipients=[USER], message_tag=tag
        ),
        "sql_transfer": lambda tag: SqlToAhaChatOperator(
            task_id="s",
            sql="SELECT 1",
            sql_conn_id=SHOP,
            action="broadcast_block",
            block_name="b",
            message_tag=tag,
        ),
        "notifier": lambda tag: AhaChatNotifier(user_ids=USER, block_name="welcome", message_tag=tag),
        "hitl_notifier": lambda tag: AhaChatHITLNotifier(approvers=USER, question_block="q", message_tag=tag),
        "approval": lambda tag: AhaChatApprovalOperator(
            task_id="a", subject="?", approvers=USER, message_tag=tag
        ),
        "hitl": lambda tag: AhaChatHITLOperator(
            task_id="h", subject="?", options=["A", "B"], approvers=USER, message_tag=tag
        ),
        "hitl_branch": lambda tag: AhaChatHITLBranchOperator(
            task_id="hb", subject="?", options=["A", "B"], approvers=USER, message_tag=tag
        ),
    }


@pytest.mark.usefixtures("airflow_db")
@pytest.mark.parametrize("tag", RETIRED)
def test_a_retired_tag_fails_when_the_dag_is_parsed(tag: str) -> None:
    """Every constructor that takes a tag refuses a retired one, in any case or as the enum member."""
    for name, build in _constructors().items():
        for given in [*(spell(tag) for spell in SPELLINGS.values()), MessageTag(tag)]:
            with pytest.raises(AhaChatValidationError) as info:
                build(given)
            assert WHY[tag] in str(info.value) and "Instead," in str(info.value), (name, given)
        kept = [
            getattr(built, "ahachat_notifier", built) for built in (build(None), build("{{ params.tag }}"))
        ]
        assert [tag.message_tag for tag in kept] == [None, "{{ params.tag }}"]  # none; checked once rendered


@pytest.mark.usefixtures("airflow_db")
def test_the_default_sends_no_tag_and_a_templated_retired_tag_sends_nothing(
    dag_runner: Any, server: RecordingServer, tmp_path: Path
) -> None:
    """Inside Airflow, against the recording server: no tag by default; a retired tag rendered from a
    template fails before any request, for one customer and for many."""
    from airflow_provider_ahachat.notifications.ahachat import AhaChatNotifier
    from airflow_provider_ahachat.operators.ahachat import BroadcastBlockOperator

    ledger = str(tmp_path / "ledger")
    notifier = AhaChatNotifier(ahachat_conn_id=CONN, user_ids=USER, block_name="welcome")
    with new_dag("default_no_tag", on_success_callback=notifier) as dag:
        BroadcastBlockOperator(task_id="one", block_name="welcome", user_id=USER)
        BroadcastBlockOperator(task_id="by_phone", block_name="welcome", phone="0908 071 111")
        BroadcastBlockOperator(
            task_id="many", block_name="welcome", recipients=[USER, "4102938475610293"], ledger_path=ledger
        )
    uri = connection_uri(server.url, BOT, TOKEN)
    result = dag_runner(dag, {CONN: uri})
    assert result.succeeded, result.summary()
    sent = [r for r in server.requests if r.path.endswith("/send")]
    assert len(sent) == 5 and all(tag_sent(r) is None for r in sent), [r.query for r in sent]

    server.requests.clear()
    with new_dag("templated_retired_tag", params={"tag": "Post_Purchase_Update"}) as dag:
        BroadcastBlockOperator(
            task_id="one", block_name="welcome", user_id=USER, message_tag="{{ params.tag }}"
        )
        BroadcastBlockOperator(
            task_id="many",
            block_name="welcome",
            recipients=[USER],
            message_tag="{{ params.tag }}",
            ledger_path=ledger,
        )
    result = dag_runner(dag, {CONN: uri})
    assert result.task_states == {"one": "failed", "many": "failed"}, result.summary()
    for task_id in ("one", "many"):
        assert "Messenger refuses the message tag POST_PURCHASE_UPDATE: Meta retired it" in (
            result.tasks[task_id].error_text or ""
        )
    assert server.requests == []


@pytest.mark.usefixtures("airflow_db")
def test_a_connection_names_the_tags_its_page_may_still_use(
    dag_runner: Any, server: RecordingServer, tmp_path: Path
) -> None:
    """The extra ``message_tags`` replaces the built-in rule and ``default_message_tag`` is sent when
    a task names none; a bad one is a clear error, before anything is sent."""
    from airflow_provider_ahachat.operators.ahachat import BroadcastBlockOperator

    news_page = {
        "conn_type": "ahachat",
        "login": BOT,
        "password": TOKEN,
        "host": server.url,
        "extra": {
            "message_tags": "non_promotional_subscription, HUMAN_AGENT",
            "default_message_tag": "NON_PROMOTIONAL_SUBSCRIPTION",
        },
    }
    with new_dag("page_tags", params={"tag": "human_agent"}) as dag:
        BroadcastBlockOperator(task_id="default", block_name="welcome", user_id=USER)
        BroadcastBlockOperator(
            task_id="templated", block_name="welcome", user_id=USER, message_tag="{{ params.tag }}"
        )
    result = dag_runner(dag, {CONN: news_page})
    assert result.succeeded, result.summary()
    assert sorted(tag_sent(r) or "" for r in server.requests) == [
        "HUMAN_AGENT",
        "NON_PROMOTIONAL_SUBSCRIPTION",
    ]

    server.requests.clear()
    bad = [
        (
            {"default_message_tag": "POST_PURCHASE_UPDATE"},
            "extra field default_message_tag: Messenger refuses",
        ),
        ({"message_tags": "HUMAN_AGENT", "default_message_tag": "ACCOUNT_UPDATE"}, "ACCOUNT_UPDATE"),
        (
            {"message_tags": ["HUMAN AGENT"]},
            "extra field message_tags[0]: 'HUMAN AGENT' is not a message tag",
        ),
        ({"message_tags": {"a": 1}}, "extra field message_tags: must be a list of tag names"),
    ]
    for extra, message in bad:
        with new_dag("bad_page_tags") as dag:
            BroadcastBlockOperator(task_id="send", block_name="welcome", user_id=USER)
        result = dag_runner(dag, {CONN: {**news_page, "extra": extra}})
        assert result.task_states == {"send": "failed"}, result.summary()
        assert message in (result.tasks["send"].error_text or ""), (extra, result.tasks["send"].error_text)
    assert server.requests == []


# ------------------------------------------------------------ 3. the window, against the sandbox


def requests_about(sandbox: SandboxServer, user_id: str) -> list[dict[str, Any]]:
    return [r for r in sandbox.request_log(limit=10_000) if f"/users/{user_id}/" in r["path"]]


@pytest.mark.usefixtures("airflow_db")
@pytest.mark.parametrize("kind", SINGLE_SENDS)
def test_one_customer_outside_the_window_fails_after_exactly_one_request_and_no_retry(
    dag_runner: Any, sandbox: SandboxServer, kind: str
) -> None:
    from airflow.sdk import DAG

    from airflow_provider_ahachat.operators import ahachat

    arguments = dict(SINGLE_SENDS[kind])
    operator = getattr(ahachat, arguments.pop("operator"))
    retries = {"ahachat_conn_id": CONN, "retries": 2, "retry_delay": datetime.timedelta(0)}
    with DAG(f"outside_one_{kind}", schedule=None, default_args=retries) as dag:
        operator(task_id="send", **arguments)
        operator(task_id="skip", outside_window="skip", **arguments)

    result = run_with_ledger(dag_runner, dag, sandbox)

    assert result.task_states == {"send": "failed", "skip": "skipped"}, result.summary()
    error = result.tasks["send"].error
    assert (
        isinstance(error, AhaChatOutsideWindowError) and type(error).__name__ == "AhaChatOutsideWindowError"
    )
    assert result.tasks["send"].try_number == 1  # Airflow did not retry it, though the task has retries
    assert "who last wrote more than 24 hours ago" in str(error)
    assert "(#10) This message is sent outside of allowed window" in str(error)
    assert "not sent (outside_window='skip')" in result.log
    sent = [r for r in sandbox.request_log(limit=1000) if r["method"] == "POST"]
    assert len(sent) == 2 and {r["status"] for r in sent} == {422}  # one each: no client retry either
    assert sandbox.outbox() == []


@pytest.mark.usefixtures("airflow_db")
def test_the_outside_window_error_survives_pickling_as_both_errors() -> None:
    import pickle

    from airflow_provider_ahachat.operators.ahachat import without_retries
    from airflow_provider_ahachat.version_compat import fail_exception

    original = AhaChatRecipientUnavailableError("gone", status=422, api_message="(#551)", meta_code=551)
    final = without_retries(original)
    again = pickle.loads(pickle.dumps(final))
    for error in (final, again):
        assert isinstance(error, AhaChatRecipientUnavailableError) and isinstance(error, fail_exception())
        assert (error.status, error.api_message, error.meta_code, str(error)) == (422, "(#551)", 551, "gone")
    assert without_retries(final) is final


@pytest.mark.usefixtures("airflow_db")
def test_a_run_of_many_with_a_third_outside_the_window_succeeds_and_a_retry_asks_nobody_again(
    dag_runner: Any, sandbox: SandboxServer, tmp_path: Path, third: ThirdOutside
) -> None:
    kind, inside, outside, people, audience, conns = third
    logical_date = datetime.datetime(2026, 12, 1, tzinfo=datetime.timezone.utc)
    with new_dag(f"third_outside_{kind}") as dag:
        # 4 of 12 outside: more than max_failure_ratio allows, if they counted.
        many_operator(kind, audience, str(tmp_path / "ledger"), max_failure_ratio=0.2)

    first = run_with_ledger(
        dag_runner, dag, sandbox, tmp_path, conns=conns, logical_date=logical_date, run_after=logical_date
    )

    assert first.succeeded, first.summary()
    summary = first.xcoms["send"]
    assert summary["outcomes"] == {"delivered": 8, "outside_window": 4}, summary
    expected = [
        {"row": n, "recipient": f"phone {row['phone']}" if "phone" in row else f"user {row['user_id']}"}
        for n, (uid, row) in enumerate(zip(people, audience, strict=True), start=1)
        if uid in outside
    ]
    assert summary["outside_window"] == expected  # named in the XCom, in input order
    outside_lines = [line for line in report(summary) if line["outcome"] == "outside_window"]
    assert [(line["row"], line["recipient"]) for line in outside_lines] == [
        (e["row"], e["recipient"]) for e in expected
    ]
    assert all(
        "(#10) This message is sent outside of allowed window" in line["reason"] for line in outside_lines
    )
    assert "4 outside the 24-hour window, not counted as failures" in first.log
    asked = Counter(
        (r["path"], r["query"].get("phone"))
        for r in sandbox.request_log(limit=10_000)
        if r["method"] == "POST"
    )
    assert sum(asked.values()) == 12 and set(asked.values()) == {1}  # each asked exactly once
    assert sandbox.outbox_counts() == dict.fromkeys(inside, 1)
    before = sandbox.stats()["total"]

    # A retry of the task (dag.test() reruns the same DAG run, with the same ledger) asks nobody again.
    second = run_with_ledger(
        dag_runner, dag, sandbox, tmp_path, conns=conns, logical_date=logical_date, run_after=logical_date
    )

    assert second.run_id == first.run_id and second.succeeded, second.summary()
    again = second.xcoms["send"]
    assert again["outcomes"] == {"delivered": 8, "outside_window": 4}, again
    assert sandbox.stats()["total"] == before  # not one request
    assert all(line.get("earlier_try") for line in report(again))
    assert "4 outside the 24-hour window (4 found by earlier tries), not counted as failures" in second.log


@pytest.mark.usefixtures("airflow_db")
def test_outside_window_fail_counts_them_against_the_limits(
    dag_runner: Any, sandbox: SandboxServer, tmp_path: Path
) -> None:
    inside = sandbox.generate_users(6)
    outside = sandbox.generate_users(3, start=100, in_window=False)
    audience = [{"user_id": uid} for uid in inside + outside]
    with new_dag("outside_fail") as dag:
        many_operator(
            "broadcast", audience, str(tmp_path / "ledger"), outside_window="fail", max_failure_ratio=0.2
        )

    result = run_with_ledger(dag_runner, dag, sandbox, tmp_path)

    assert result.task_states == {"send": "failed"}, result.summary()
    error = result.tasks["send"].error
    assert "3 of 9 rows were not delivered, more than max_failure_ratio=0.2 allow" in str(error)
    assert error.summary["outcomes"] == {"delivered": 6, "outside_window": 3}
    assert "3 outside the 24-hour window, counted as failures" in result.log
    assert sandbox.outbox_counts() == dict.fromkeys(inside, 1)


@pytest.mark.usefixtures("airflow_db")
def test_a_refused_tag_stops_a_run_of_many(dag_runner: Any, sandbox: SandboxServer, tmp_path: Path) -> None:
    """A page whose connection allows a tag Messenger refuses: the first refusal stops the run."""
    ids = sandbox.generate_users(30)
    uri = f"{sandbox.connection_uri}?message_tags=POST_PURCHASE_UPDATE"  # the page may, it believes
    with new_dag("refused_tag_many") as dag:
        many_operator(
            "broadcast", [{"user_id": uid} for uid in ids], str(tmp_path / "ledger"),
            message_tag="{{ 'POST_PURCHASE_UPDATE' }}", concurrency=2,
        )  # fmt: skip

    result = run_without_token(dag_runner, dag, sandbox, {CONN: uri})

    assert result.task_states == {"send": "failed"}, result.summary()
    assert "Messenger refused the message tag POST_PURCHASE_UPDATE" in str(result.tasks["send"].error)
    assert len(sandbox.request_log(limit=1000)) <= 4  # the requests in flight, no more
    assert sandbox.outbox() == []


# ------------------------------------------------------------ 4. HUMAN_AGENT and the sandbox's rules


@pytest.mark.parametrize("way", ["user_id", "phone"])
def test_human_agent_reaches_a_customer_within_7_days_and_not_after(sandbox: SandboxServer, way: str) -> None:
    def address(user_id: str) -> dict[str, str]:
        return {"user_id": user_id} if way == "user_id" else {"phone": sandbox.user(user_id)["phone"]}

    week = 7 * 24 * 60
    sandbox.update_user(LAN, last_interaction_minutes_ago=week - 5)
    sandbox.update_user(BAO, last_interaction_minutes_ago=week + 5)
    with AhaChatClient(sandbox.bot_id, sandbox.token, sandbox.url, retry=RETRYING) as client:
        client.run("broadcast_block", {"block_name": "welcome", "message_tag": "human_agent"}, **address(LAN))
        with pytest.raises(
            AhaChatOutsideWindowError, match="more than 7 days ago, past what HUMAN_AGENT allows"
        ):
            client.run(
                "broadcast_block", {"block_name": "welcome", "message_tag": "HUMAN_AGENT"}, **address(BAO)
            )
        with pytest.raises(AhaChatOutsideWindowError, match="more than 7 days ago"):
            client.run(
                "broadcast_block", {"block_name": "welcome", "message_tag": "HUMAN_AGENT"}, **address(HUNG)
            )
        # Without the tag, even 6 days and 23 hours is outside the window.
        with pytest.raises(AhaChatOutsideWindowError, match="more than 24 hours ago"):
            client.run("broadcast_block", {"block_name": "welcome"}, **address(LAN))
    assert [(e["messenger_user_id"], e["message_tag"]) for e in sandbox.outbox()] == [(LAN, "HUMAN_AGENT")]
    assert len([r for r in sandbox.request_log() if r["method"] == "POST"]) == 4


def test_the_sandbox_refuses_a_retired_tag_inside_the_window_and_the_2025_rules_take_it(
    sandbox: SandboxServer,
) -> None:
    allows = list(RETIRED)  # a connection that lets them through, to reach the sandbox
    with AhaChatClient(
        sandbox.bot_id, sandbox.token, sandbox.url, retry=RETRYING, message_tags=allows
    ) as client:
        for tag in RETIRED:
            with pytest.raises(AhaChatMessageTagRefusedError) as info:
                client.run(
                    "broadcast_block", {"block_name": "welcome", "message_tag": tag}, user_id=LAN
                )  # Lan wrote 30 minutes ago
            assert info.value.status == 400 and info.value.meta_code == 100
        sandbox.configure(messenger_rules="2025")
        for tag in RETIRED:
            client.run(
                "broadcast_block", {"block_name": "welcome", "message_tag": tag}, user_id=BAO
            )  # 3 days ago: reached then
        with pytest.raises(AhaChatOutsideWindowError):  # untagged messages keep the 24-hour rule
            client.run("send_text", {"text": "Chào"}, user_id=BAO)
    assert [e["message_tag"] for e in sandbox.outbox()] == list(RETIRED)
