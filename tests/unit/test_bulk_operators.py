"""The operators' ``recipients=`` inside Airflow (``dag.test()``), against the sandbox over HTTP."""

from __future__ import annotations

import datetime
import json
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers.dag_helpers import CONN, new_dag, operator_for, report, run_without_token

from airflow_provider_ahachat.sandbox import SandboxServer

LAN = "3824547807572463"  # a seeded customer

pytestmark = pytest.mark.usefixtures("airflow_db")


def unknown_id(number: int) -> str:
    """A user ID that no sandbox user has (generated users' IDs start with 9)."""
    return f"8{number:015d}"


def run(dag_runner: Any, dag: Any, sandbox: SandboxServer, ledger: Path | None = None, **kwargs: Any) -> Any:
    """Run ``dag``; check that the token is nowhere: log, XCom, errors, report and journal files."""
    return run_without_token(dag_runner, dag, sandbox, files=[ledger] if ledger else (), **kwargs)


RunTask = Callable[..., Any]


@pytest.fixture
def run_task(dag_runner: Any, sandbox: SandboxServer, tmp_path: Path) -> RunTask:
    """Runs a DAG of one task, its ledger in the test's folder, as :func:`run` does.

    Its arguments: the DAG's ID, the operator class and the task's own arguments.
    """

    def _run(dag_id: str, operator: Any, **arguments: Any) -> Any:
        ledger = tmp_path / "ledger"
        with new_dag(dag_id) as dag:
            operator(ledger_path=str(ledger), **arguments)
        return run(dag_runner, dag, sandbox, ledger)

    return _run


def assert_is_summary(summary: Any, action: str, outcomes: dict[str, int]) -> None:
    """The XCom of a bulk task is the run's summary, small, never the list of recipients."""
    assert isinstance(summary, dict), summary
    assert summary["action"] == action
    assert summary["outcomes"] == outcomes, summary
    assert summary["total"] == sum(outcomes.values())
    assert Path(summary["report"]).is_file()
    assert len(summary["first_failures"]) <= 20
    assert len(json.dumps(summary, ensure_ascii=False)) < 10_000
    assert not any(isinstance(value, list) and len(value) > 20 for value in summary.values())


def user_requests(sandbox: SandboxServer) -> Counter[str]:
    """How many API requests named each user, by the user ID in the path."""
    counts: Counter[str] = Counter()
    for entry in sandbox.request_log(limit=1000):
        found = re.search(r"/users/(\d+)/", entry["path"])
        if found:
            counts[found.group(1)] += 1
    return counts


def test_every_bulk_option_reaches_the_runner_or_the_columns() -> None:
    """An option the audience operators take is handed on whole: none is dropped on the way."""
    import dataclasses
    import inspect

    from airflow_provider_ahachat.bulk import BulkRunner
    from airflow_provider_ahachat.bulk.setup import columns_of, runner_options
    from airflow_provider_ahachat.bulk_options import BulkOptions
    from airflow_provider_ahachat.operators.ahachat import AddTagsOperator, AhaChatAudienceOperator

    given: dict[str, Any] = {
        "concurrency": 3,
        "rate_limit": 7.5,
        "max_failures": 2,
        "max_failure_ratio": 0.5,
        "dry_run": True,
        "progress_interval": 1.0,
        "dedupe_on": "order_id",
        "null_attributes": "omit",
        "resolve_phones": True,
        "delivery_mark": "airflow_delivery",
    }
    names = {field.name for field in dataclasses.fields(BulkOptions)}
    assert names == set(given)
    assert names <= set(inspect.signature(AhaChatAudienceOperator.__init__).parameters)
    options = AddTagsOperator(task_id="tag", tags="vip", recipients=[LAN], **given).bulk_options
    assert options == BulkOptions(**given)
    to_runner = runner_options(options)
    assert set(to_runner) <= set(inspect.signature(BulkRunner).parameters)
    assert to_runner == {name: given[name] for name in names - {"dedupe_on", "null_attributes"}}
    columns = columns_of(options)
    assert (columns.dedupe_on, columns.null_attributes) == (("order_id",), "omit")


# --------------------------------------------------------------------------- 1. every operator


@pytest.mark.slow
def test_every_audience_operator_acts_once_on_each_recipient(
    dag_runner: Any, sandbox: SandboxServer, tmp_path: Path
) -> None:
    """The operator of each action of the registry that acts on customers, for three of them."""
    from airflow_provider_ahachat.registry import ACTIONS, RECIPIENT_ACTIONS

    groups = {action: sandbox.generate_users(3, start=10 * i) for i, action in enumerate(RECIPIENT_ACTIONS)}
    ledger = str(tmp_path / "ledger")
    with new_dag("bulk_every_operator") as dag:
        for action, ids in groups.items():
            operator_for(action)(
                task_id=action, recipients=ids, ledger_path=ledger, **ACTIONS[action].example()
            )

    result = run(dag_runner, dag, sandbox, tmp_path / "ledger")

    assert result.succeeded, result.summary()
    for action in groups:
        summary = result.xcoms[action]
        assert_is_summary(summary, action, {"delivered": 3})
        assert f"task_id={action}" in summary["report"]
        assert [line["outcome"] for line in report(summary)] == ["delivered"] * 3
    # One request per recipient, each recipient named once.
    assert user_requests(sandbox) == Counter({uid: 1 for uids in groups.values() for uid in uids})
    messaged = {uid for action, ids in groups.items() if ACTIONS[action].sends_message for uid in ids}
    assert sandbox.outbox_counts() == dict.fromkeys(messaged, 1)
    for entry in sandbox.outbox():
        if entry["kind"] == "broadcast":
            assert entry["message_tag"] is None  # no tag by default: a standard message


# --------------------------------------------------------------------------- 2. recipients forms


def test_every_form_of_recipients(dag_runner: Any, sandbox: SandboxServer, tmp_path: Path) -> None:
    from airflow.sdk import ObjectStoragePath, task

    from airflow_provider_ahachat.operators.ahachat import AddTagsOperator, BroadcastBlockOperator

    ids = sandbox.generate_users(24)
    by_id, by_dict, from_xcom, in_csv, in_jsonl, in_url, in_storage, in_template = (
        ids[i : i + 3] for i in range(0, 24, 3)
    )
    csv_file = tmp_path / "audience.csv"
    csv_file.write_text(
        "user_id,order_id,tracking_number\n"
        + "".join(f"{uid},CSV{n},T{n}\n" for n, uid in enumerate(in_csv)),
        encoding="utf-8",
    )
    jsonl_file = tmp_path / "audience.jsonl"
    jsonl_file.write_text(
        "".join(
            json.dumps({"user_id": uid, "attributes": {"order_id": f"JL{n}", "tracking_number": f"J{n}"}})
            + "\n"
            for n, uid in enumerate(in_jsonl)
        ),
        encoding="utf-8",
    )
    url_file = tmp_path / "by_url.csv"
    url_file.write_text("user_id\n" + "".join(f"{uid}\n" for uid in in_url), encoding="utf-8")
    storage_file = tmp_path / "by_storage.jsonl"
    storage_file.write_text("".join(json.dumps(uid) + "\n" for uid in in_storage), encoding="utf-8")
    phones = {uid: sandbox.user(uid)["phone"] for uid in by_dict}
    ledger = str(tmp_path / "ledger")
    broadcast = {
        "block_name": "shipping_update",
        "ledger_path": ledger,
    }

    with new_dag("bulk_recipient_forms", params={"ids": in_template}) as dag:

        @task
        def audience() -> list[str]:
            return from_xcom

        AddTagsOperator(task_id="ids", recipients=by_id, tags="list", ledger_path=ledger)
        BroadcastBlockOperator(
            task_id="dicts",
            recipients=[
                # By user ID with flat columns; by phone with nested attributes; both at once.
                {"user_id": by_dict[0], "order_id": "D0", "tracking_number": "T0"},
                {"phone": phones[by_dict[1]], "attributes": {"order_id": "D1", "tracking_number": "T1"}},
                {"user_id": by_dict[2], "order_id": "D2", "attributes": '{"tracking_number": "T2"}'},
            ],
            **broadcast,
        )
        AddTagsOperator(task_id="xcom", recipients=audience(), tags="xcom", ledger_path=ledger)
        BroadcastBlockOperator(task_id="csv", recipients=str(csv_file), **broadcast)
        BroadcastBlockOperator(task_id="jsonl", recipients=str(jsonl_file), **broadcast)
        AddTagsOperator(task_id="url", recipients=url_file.as_uri(), tags="url", ledger_path=ledger)
        AddTagsOperator(
            task_id="storage",
            recipients=ObjectStoragePath(storage_file.as_uri()),
            tags="storage",
            ledger_path=ledger,
        )
        AddTagsOperator(
            task_id="template", recipients="{{ params.ids | tojson }}", tags="template", ledger_path=ledger
        )

    result = run(dag_runner, dag, sandbox, tmp_path / "ledger")

    assert result.succeeded, result.summary()
    for task_id in ("ids", "dicts", "xcom", "csv", "jsonl", "url", "storage", "template"):
        assert result.xcoms[task_id]["outcomes"] == {"delivered": 3}, (task_id, result.xcoms[task_id])
        assert result.xcoms[task_id]["total"] == 3
    for tag, uids in {
        "list": by_id,
        "xcom": from_xcom,
        "url": in_url,
        "storage": in_storage,
        "template": in_template,
    }.items():
        for uid in uids:
            assert sandbox.user(uid)["tags"] == [tag]
    # Each broadcast carries its own row's values, in the message and on the user.
    expected = {
        **{uid: (f"D{n}", f"T{n}") for n, uid in enumerate(by_dict)},
        **{uid: (f"CSV{n}", f"T{n}") for n, uid in enumerate(in_csv)},
        **{uid: (f"JL{n}", f"J{n}") for n, uid in enumerate(in_jsonl)},
    }
    assert sandbox.outbox_counts() == dict.fromkeys(expected, 1)
    for entry in sandbox.outbox():
        order, tracking = expected[entry["messenger_user_id"]]
        assert entry["attributes"] == {"order_id": order, "tracking_number": tracking}
        assert entry["text"] == (
            f"Đơn hàng {order} đã được giao cho đơn vị vận chuyển, mã vận đơn {tracking}."
        )
        assert sandbox.user(entry["messenger_user_id"])["attributes"] == entry["attributes"]
    # A phone row is reported by its phone; the report has one line per input row, in order.
    lines = report(result.xcoms["dicts"])
    assert [line["row"] for line in lines] == [1, 2, 3]
    assert phones[by_dict[1]] in lines[1]["recipient"]


# --------------------------------------------------------------------------- 3. ten thousand


def audience_with_unknowns(sandbox: SandboxServer, total: int) -> tuple[list[str], list[str]]:
    """``total`` recipients, 3% of them (spread evenly) user IDs that the sandbox does not know."""
    missing = total * 3 // 100
    known = iter(sandbox.generate_users(total - missing))
    unknown = [unknown_id(n) for n in range(missing)]
    spots = {n * total // missing + 7 for n in range(missing)}
    pending = iter(unknown)
    return [next(pending) if n in spots else next(known) for n in range(total)], unknown


def xcom_value(dag_id: str, task_id: str, key: str) -> Any:
    """An XCom of the latest run of ``dag_id``, by key, as a task would pull it."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        value = session.scalars(
            select(XComModel.value)
            .where(XComModel.dag_id == dag_id, XComModel.task_id == task_id, XComModel.key == key)
            .order_by(XComModel.timestamp.desc())
        ).first()
    return json.loads(value) if isinstance(value, str | bytes) else value


@pytest.mark.parametrize(
    ("total", "limits"),
    [
        pytest.param(3_000, {"max_failure_ratio": 0.05}, id="ratio", marks=pytest.mark.slow),
        # The same with neither limit (any failure fails), on fewer recipients to keep the suite quick.
        pytest.param(1_000, {}, id="default", marks=pytest.mark.slow),
    ],
)
def test_many_recipients_with_three_percent_unknown(
    dag_runner: Any, sandbox: SandboxServer, tmp_path: Path, total: int, limits: dict[str, Any]
) -> None:
    from airflow_provider_ahachat.operators.ahachat import BroadcastBlockOperator

    audience, unknown = audience_with_unknowns(sandbox, total)
    reachable = [uid for uid in audience if uid not in set(unknown)]
    assert (len(audience), len(unknown), len(reachable)) == (total, total * 3 // 100, total * 97 // 100)
    # A large audience comes as a file, read row by row.
    audience_file = tmp_path / "audience.jsonl"
    audience_file.write_text("".join(json.dumps(uid) + "\n" for uid in audience), encoding="utf-8")

    with new_dag(f"bulk_many_{total}") as dag:
        BroadcastBlockOperator(
            task_id="broadcast",
            recipients=str(audience_file),
            block_name="welcome",
            concurrency=16,
            rate_limit=0,
            ledger_path=str(tmp_path / "ledger"),
            **limits,
        )

    started = time.monotonic()
    result = run(dag_runner, dag, sandbox, tmp_path / "ledger")
    took = time.monotonic() - started

    outcome = result.tasks["broadcast"]
    failures, delivered = len(unknown), len(reachable)
    first = unknown[0]
    first_row = audience.index(first) + 1
    if limits:
        assert result.succeeded, result.summary()
        summary = outcome.xcom
        assert xcom_value(result.dag_id, "broadcast", "summary") == summary
    else:
        assert outcome.state == "failed", result.summary()
        error = outcome.error
        assert type(error).__name__ == "AhaChatBulkError", outcome.error_text
        message = str(error)
        assert f"{failures} of {total} rows were not delivered, more than max_failures=0 allow" in message
        assert f"({delivered} delivered, {failures} failed)" in message
        assert f"First: row {first_row} user {first}: " in message
        assert "not found" in message
        summary = error.summary
        assert not outcome.has_xcom  # a failed task returns nothing ...
        assert xcom_value(result.dag_id, "broadcast", "summary") == summary  # ... but keeps its summary
    assert summary["outcomes"] == {"delivered": delivered, "failed": failures}, summary
    assert summary["total"] == total
    # Everyone reachable got exactly one message, however the task ended: nobody was skipped.
    assert sandbox.outbox_counts() == dict.fromkeys(reachable, 1)
    lines = report(summary)
    assert len(lines) == total
    failed = [line for line in lines if line["outcome"] != "delivered"]
    assert [line["recipient"] for line in failed] == [f"user {uid}" for uid in unknown]
    assert [line["row"] for line in failed] == [audience.index(uid) + 1 for uid in unknown]
    assert all(line["outcome"] == "failed" and "not found" in line["reason"] for line in failed)
    print(f"{total:,} recipients: the DAG run took {took:.1f}s, the bulk run {summary['seconds']}s")


# --------------------------------------------------------------------------- 4. dry run


def test_dry_run_sends_nothing(dag_runner: Any, sandbox: SandboxServer, tmp_path: Path) -> None:
    from airflow_provider_ahachat.operators.ahachat import AddTagsOperator, BroadcastBlockOperator

    ids = sandbox.generate_users(15)
    lan_tags = sandbox.user(LAN)["tags"]
    ledger = tmp_path / "ledger"

    with new_dag("bulk_dry_run") as dag:
        BroadcastBlockOperator(
            task_id="many",
            recipients=[
                {"user_id": uid, "order_id": f"DH{n}", "tracking_number": "X"} for n, uid in enumerate(ids)
            ]
            + [{"phone": "090-ABC"}],
            block_name="shipping_update",
            dry_run=True,
            max_failures=1,
            ledger_path=str(ledger),
        )
        AddTagsOperator(task_id="one", user_id=LAN, tags="thu", dry_run=True, ledger_path=str(ledger))

    result = run(dag_runner, dag, sandbox, ledger)

    assert result.succeeded, result.summary()
    assert sandbox.stats()["total"] == 0
    assert sandbox.outbox() == []
    assert sandbox.user(LAN)["tags"] == lan_tags
    many = result.xcoms["many"]
    assert many["dry_run"] is True
    assert many["would_send"] == 15
    assert many["outcomes"] == {"would_send": 15, "invalid": 1}
    samples = many["sample_requests"]
    assert len(samples) == 10
    assert samples[0]["row"] == 1
    assert samples[0]["request"] == f"POST /api/bots/{sandbox.bot_id}/users/{ids[0]}/send"
    assert samples[0]["query"] == {
        "ahachat_block_name": "shipping_update",
        "order_id": "DH0",
        "tracking_number": "X",
    }
    assert many["report"].endswith("dry-run.jsonl")
    assert [line["outcome"] for line in report(many)] == ["would_send"] * 15 + ["invalid"]
    # Nothing was claimed: a real run afterwards would send to everyone.
    assert not list(ledger.rglob("journal-*"))
    assert result.xcoms["one"] == {
        "dry_run": True,
        "would_send": 1,
        "request": {
            "request": f"POST /api/bots/{sandbox.bot_id}/users/{LAN}/tags",
            "json": {"tags": ["thu"]},
        },
    }


# --------------------------------------------------------------------------- 5. retry


def test_a_cleared_task_skips_whoever_was_reached(
    dag_runner: Any, sandbox: SandboxServer, tmp_path: Path
) -> None:
    """A retried bulk task (same DAG run) sends only to who was not reached, and never twice."""
    from airflow_provider_ahachat.operators.ahachat import SendTextMessageOperator

    ids = sandbox.generate_users(40)
    late = unknown_id(1)  # not a customer yet: the first try fails for them
    audience = [*ids[:20], late, *ids[20:]]
    ledger = tmp_path / "ledger"
    # The first request is processed but answered 500: its outcome is unknown to the client.
    sandbox.configure(fail_next=[500], deliver_before_fail=True)
    logical_date = datetime.datetime(2026, 11, 11, tzinfo=datetime.timezone.utc)

    with new_dag("bulk_retry") as dag:
        SendTextMessageOperator(
            task_id="send", recipients=audience, text="Sale 11.11", concurrency=1, ledger_path=str(ledger)
        )

    first = run(dag_runner, dag, sandbox, ledger, logical_date=logical_date, run_after=logical_date)

    assert first.task_states == {"send": "failed"}, first.summary()
    summary = first.tasks["send"].error.summary
    assert summary["outcomes"] == {"delivered": 39, "failed": 1, "unknown": 1}, summary
    assert "(39 delivered, 1 failed, 1 unknown)" in str(first.tasks["send"].error)
    assert sandbox.outbox_counts() == dict.fromkeys(ids, 1)  # the unknown one was delivered too
    unsure = audience[0]

    sandbox.add_user({"messenger_user_id": late, "first_name": "Mới", "last_interaction_minutes_ago": 1})
    second = run(dag_runner, dag, sandbox, ledger, logical_date=logical_date, run_after=logical_date)

    # dag.test() with the same logical date and run_after clears and reruns the same DAG run.
    assert second.run_id == first.run_id
    # The unknown outcome is not resent (it would risk a duplicate), so the task fails again.
    assert second.task_states == {"send": "failed"}, second.summary()
    summary = second.tasks["send"].error.summary
    assert summary["outcomes"] == {"delivered": 40, "unknown": 1}, summary
    assert summary["delivered_in_earlier_tries"] == 39
    assert sandbox.outbox_counts() == dict.fromkeys([*ids, late], 1)
    lines = {line["recipient"]: line for line in report(summary)}
    assert lines[f"user {late}"] == {"row": 21, "recipient": f"user {late}", "outcome": "delivered"}
    assert lines[f"user {ids[0]}"]["earlier_try"] is True
    assert lines[f"user {unsure}"]["outcome"] == "unknown"
    assert "not resent" in lines[f"user {unsure}"]["reason"]
    # Two tries, two journals, in the task instance's own folder.
    (folder,) = {path.parent for path in ledger.rglob("journal-*.jsonl")}
    assert len(list(folder.glob("journal-*.jsonl"))) == 2
    assert folder.name == "map_index=-1" and folder.parent.name == "task_id=send"


# --------------------------------------------------------------------------- 6. mapped batches


def test_mapped_batches_each_keep_their_own_ledger(
    dag_runner: Any, sandbox: SandboxServer, tmp_path: Path
) -> None:
    from airflow.models.pool import Pool
    from airflow.sdk import task

    from airflow_provider_ahachat.operators.ahachat import BroadcastBlockOperator

    ids = sandbox.generate_users(50)
    ledger = tmp_path / "ledger"
    # A pool caps how many batches run at once across the whole Airflow deployment.
    Pool.create_or_update_pool("ahachat_bulk", slots=2, description="AhaChat bulk", include_deferred=False)

    with new_dag("bulk_mapped") as dag:

        @task
        def batches() -> list[list[dict[str, Any]]]:
            rows = [
                {"user_id": uid, "order_id": f"M{n}", "tracking_number": "T"} for n, uid in enumerate(ids)
            ]
            return [rows[i : i + 20] for i in range(0, len(rows), 20)]

        BroadcastBlockOperator.partial(
            task_id="broadcast",
            block_name="shipping_update",
            rate_limit=0,
            ledger_path=str(ledger),
            pool="ahachat_bulk",
        ).expand(recipients=batches())

    result = run(dag_runner, dag, sandbox, ledger)

    assert result.succeeded, result.summary()
    assert [key for key in result.tasks if key.startswith("broadcast")] == [
        "broadcast[0]",
        "broadcast[1]",
        "broadcast[2]",
    ]
    for index, size in enumerate((20, 20, 10)):
        summary = result.xcoms[f"broadcast[{index}]"]
        assert summary["outcomes"] == {"delivered": size}
        assert summary["ledger"].endswith(f"task_id=broadcast/map_index={index}")
        assert Path(summary["report"]).parent == Path(summary["ledger"])
    assert sandbox.outbox_counts() == dict.fromkeys(ids, 1)
    for n, entry in enumerate(sorted(sandbox.outbox(), key=lambda e: e["messenger_user_id"])):
        assert entry["attributes"]["order_id"] == f"M{n}"
    assert sorted(p.name for p in ledger.rglob("map_index=*")) == [f"map_index={i}" for i in range(3)]
    assert _pools(result.dag_id) == {"broadcast": {"ahachat_bulk"}, "batches": {"default_pool"}}


def _pools(dag_id: str) -> dict[str, set[str]]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        pools: dict[str, set[str]] = {}
        for ti in session.query(TaskInstance).filter_by(dag_id=dag_id):
            pools.setdefault(ti.task_id, set()).add(ti.pool)
        return pools


# --------------------------------------------------------------------------- 7. validation

BAD_SHARED: list[tuple[str, str, dict[str, Any], str]] = [
    (
        "AddAttributesOperator",
        "reserved",
        {"attributes": {"Ahachat_Block_Name": "0908"}},
        "attribute name 'Ahachat_Block_Name' is reserved by the Broadcast API",
    ),
    ("AddTagsOperator", "no_tags", {"tags": []}, "tags: must name at least one tag"),
    (
        "BroadcastBlockOperator",
        "bad_tag",
        {"block_name": "welcome", "message_tag": "PROMOTION"},
        "message_tag: 'PROMOTION' is not a message tag Messenger accepts",
    ),
    (
        "SendTextMessageOperator",
        "both",
        {"text": "hi", "user_id": LAN},
        "recipients: give either recipients or a single user_id/phone, not both",
    ),
    (
        "AddTagsOperator",
        "no_file",
        {"tags": "x", "recipients": "/nowhere/audience.csv"},
        "recipients: there is no file",
    ),
    (
        "AddTagsOperator",
        "not_a_file",
        {"tags": "x", "recipients": "audience.xlsx"},
        "recipients: 'audience.xlsx' is neither",
    ),
    (
        # A list rendered by Jinja is Python's repr, not JSON: ``| tojson`` makes it JSON.
        "AddTagsOperator",
        "repr_list",
        {"tags": "x", "recipients": "{{ params.ids }}", "params": {"ids": ["9000000000000000"]}},
        "recipients: is a string but not valid JSON",
    ),
    (
        "AddTagsOperator",
        "no_concurrency",
        {"tags": "x", "concurrency": 0},
        "concurrency: must be a whole number from 1 to 256, got 0",
    ),
    (
        "AddTagsOperator",
        "bad_rate",
        {"tags": "x", "rate_limit": -1},
        "rate_limit: must be requests per second, 0 or more",
    ),
    (
        "AddTagsOperator",
        "bad_ratio",
        {"tags": "x", "max_failure_ratio": 1.5},
        "max_failure_ratio: must be from 0 to 1",
    ),
]


def test_bad_shared_arguments_fail_before_anything_is_sent(
    dag_runner: Any, sandbox: SandboxServer, tmp_path: Path
) -> None:
    from airflow_provider_ahachat.operators import ahachat

    ids = sandbox.generate_users(3)
    with new_dag("bulk_bad_shared") as dag:
        for class_name, task_id, kwargs, _ in BAD_SHARED:
            getattr(ahachat, class_name)(
                task_id=task_id, **{"recipients": ids, "ledger_path": str(tmp_path / "ledger"), **kwargs}
            )

    result = run(dag_runner, dag, sandbox, tmp_path / "ledger")

    assert set(result.task_states.values()) == {"failed"}, result.summary()
    for _, task_id, _, message in BAD_SHARED:
        error = result.tasks[task_id].error_text or ""
        assert "AhaChatValidationError" in error and message in error, (task_id, error)
    assert sandbox.stats()["total"] == 0
    assert not list((tmp_path / "ledger").rglob("journal-*"))


def test_bad_rows_are_invalid_and_the_rest_delivered(run_task: RunTask, sandbox: SandboxServer) -> None:
    from airflow_provider_ahachat.operators.ahachat import BroadcastBlockOperator

    ids = sandbox.generate_users(5)
    rows: list[Any] = [
        {"user_id": ids[0], "order_id": "A"},
        {"phone": "090-ABC"},
        {"user_id": ids[1], "phone": "+84901234567"},  # both: the user ID wins
        {"user_id": ids[2], "attributes": {"ahachat_block_name": "other"}},
        {"user_id": ids[3], "attributes": {"ngày giao ": "30/11/2026"}},
        {"order_id": "no one"},
        3.5,
        ids[4],
        ids[0],
    ]

    result = run_task(
        "bulk_bad_rows",
        BroadcastBlockOperator,
        task_id="broadcast",
        recipients=rows,
        block_name="shipping_update",
        max_failures=5,
    )

    assert result.succeeded, result.summary()
    summary = result.xcoms["broadcast"]
    assert summary["outcomes"] == {"delivered": 3, "invalid": 5, "duplicate": 1}
    lines = report(summary)
    assert [line["outcome"] for line in lines] == ["delivered", "invalid", "delivered"] + ["invalid"] * 4 + [
        "delivered",
        "duplicate",
    ]
    reasons = {line["row"]: line.get("reason", "") for line in lines}
    assert reasons[2].startswith("row 2: phone: '090-ABC' is not a phone number"), reasons[2]
    assert lines[2]["recipient"] == f"user {ids[1]}"
    assert reasons[4].startswith("row 4: ") and "'ahachat_block_name' is reserved" in reasons[4], reasons[4]
    assert reasons[5].startswith("row 5: attributes.ngày giao : attribute name 'ngày giao ' has"), reasons[5]
    assert reasons[6] == "no user_id, messenger_user_id or phone in row 6", reasons[6]
    assert reasons[7].startswith("row 7: a recipient is a user ID or a mapping"), reasons[7]
    assert summary["first_failures"][0] == {
        "row": 2,
        "recipient": "phone 090-ABC",
        "outcome": "invalid",
        "reason": reasons[2],
    }
    assert sandbox.outbox_counts() == {ids[0]: 1, ids[1]: 1, ids[4]: 1}
    assert sandbox.stats()["total"] == 3


# --------------------------------------------------------------------------- 8. the token


def test_a_refused_token_stops_the_run_and_is_never_written(
    dag_runner: Any, sandbox: SandboxServer, tmp_path: Path
) -> None:
    from airflow_provider_ahachat.operators.ahachat import AddTagsOperator
    from airflow_provider_ahachat.sandbox.server import connection_uri

    ids = sandbox.generate_users(100)
    ledger = tmp_path / "ledger"
    with new_dag("bulk_bad_token") as dag:
        AddTagsOperator(task_id="tags", recipients=ids, tags="x", concurrency=4, ledger_path=str(ledger))

    wrong = "f" * 64
    result = dag_runner(dag, {CONN: connection_uri(sandbox.url, sandbox.bot_id, wrong)})

    assert result.task_states == {"tags": "failed"}, result.summary()
    error = result.tasks["tags"].error
    assert type(error).__name__ == "AhaChatBulkError"
    assert "AhaChat add_tags stopped" in str(error)
    summary = error.summary
    assert summary["outcomes"].get("delivered", 0) == 0
    assert summary["outcomes"]["not_sent"] == 100
    # The first refusal stops every worker at once: at most the requests already in flight.
    assert 1 <= sandbox.stats()["total"] <= 4
    assert set(sandbox.stats()["by_status"]) == {"401"}
    files = [path for path in ledger.rglob("*") if path.is_file()]
    assert {path.name.split("-")[0] for path in files} == {"journal", "report.jsonl", "ledger.lock"}
    everything = [result.log, result.tasks["tags"].error_text or "", json.dumps(summary)]
    everything += [path.read_text(encoding="utf-8") for path in files]
    for text in everything:
        assert wrong not in text
        assert sandbox.token not in text


# --------------------------------------------------------------------------- 9. progress


def test_progress_lines_in_the_task_log(run_task: RunTask, sandbox: SandboxServer) -> None:
    from airflow_provider_ahachat.operators.ahachat import AddTagsOperator

    ids = sandbox.generate_users(40)
    sandbox.configure(latency_ms=50)
    result = run_task(
        "bulk_progress",
        AddTagsOperator,
        task_id="tags",
        recipients=ids,
        tags="x",
        concurrency=2,
        rate_limit=0,
        progress_interval=0.2,
    )

    assert result.succeeded, result.summary()
    log = result.tasks["tags"].log
    assert "AhaChat add_tags for 40 recipients: 2 in flight, no limit on requests/s at most" in log
    done = [int(n) for n in re.findall(r"AhaChat add_tags: (\d+) / 40 \(\d+\.\d%\) done", log)]
    assert len(done) >= 3, log
    assert done == sorted(done) and done[-1] == 40 and done[0] < 40
    assert re.search(r"about \d+s left", log)


# --------------------------------------------------------------------------- object storage


@pytest.fixture
def memory_storage() -> Any:
    """A ``memory://`` object store for Airflow's ObjectStoragePath, emptied afterwards."""
    from airflow.sdk.io import attach
    from fsspec.implementations.memory import MemoryFileSystem

    fs = MemoryFileSystem()
    attach("memory", fs=fs)
    root = f"memory://ahachat-tests/{uuid.uuid4().hex}"
    yield root
    fs.rm(root.removeprefix("memory://"), recursive=True)


def test_ledger_and_recipients_on_object_storage(
    dag_runner: Any, sandbox: SandboxServer, memory_storage: str
) -> None:
    """On object storage (no appends: one object per journal write) a rerun also skips who was reached."""
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_ahachat.operators.ahachat import SendTextMessageOperator

    ids = sandbox.generate_users(30)
    late = unknown_id(7)
    audience = ObjectStoragePath(f"{memory_storage}/audience.csv")
    audience.write_text("user_id\n" + "".join(f"{uid}\n" for uid in [*ids[:10], late, *ids[10:]]))
    ledger = f"{memory_storage}/ledger"
    day = datetime.datetime(2026, 11, 12, tzinfo=datetime.timezone.utc)

    with new_dag("bulk_object_storage") as dag:
        SendTextMessageOperator(
            task_id="send", recipients=str(audience), text="Chào bạn", concurrency=4, ledger_path=ledger
        )

    first = run(dag_runner, dag, sandbox, logical_date=day, run_after=day)

    assert first.task_states == {"send": "failed"}, first.summary()
    summary = first.tasks["send"].error.summary
    assert summary["outcomes"] == {"delivered": 30, "failed": 1}
    # universal_pathlib 0.2 (Airflow 3.1) prints memory:///..., later releases memory://...
    assert summary["report"].replace(":///", "://").startswith(f"{ledger}/dag_id=bulk_object_storage/")
    assert sandbox.outbox_counts() == dict.fromkeys(ids, 1)

    sandbox.add_user({"messenger_user_id": late, "first_name": "Mới", "last_interaction_minutes_ago": 1})
    second = run(dag_runner, dag, sandbox, logical_date=day, run_after=day)

    assert second.succeeded, second.summary()
    summary = second.xcoms["send"]
    assert summary["outcomes"] == {"delivered": 31}
    assert summary["delivered_in_earlier_tries"] == 30
    assert sandbox.outbox_counts() == dict.fromkeys([*ids, late], 1)
    lines = [json.loads(line) for line in ObjectStoragePath(summary["report"]).read_text().splitlines()]
    assert [line["row"] for line in lines if not line.get("earlier_try")] == [11]
    folder = ObjectStoragePath(summary["ledger"])
    journals = [p for p in folder.iterdir() if p.name.startswith("journal-")]
    assert len({p.name.rsplit("-", 1)[0] for p in journals}) == 2  # two tries
    for path in folder.iterdir():
        assert sandbox.token not in path.read_text()


def test_the_default_ledger_folder_comes_from_the_configuration(
    dag_runner: Any, sandbox: SandboxServer, tmp_path: Path
) -> None:
    from airflow_provider_ahachat.operators.ahachat import AddTagsOperator

    ids = sandbox.generate_users(3)
    with new_dag("bulk_configured_ledger") as dag:
        AddTagsOperator(task_id="tags", recipients=ids, tags="x")

    configured = tmp_path / "configured"
    result = dag_runner(
        dag, {CONN: sandbox.connection_uri}, env={"AIRFLOW__AHACHAT__LEDGER_PATH": str(configured)}
    )

    assert result.succeeded, result.summary()
    summary = result.xcoms["tags"]
    assert summary["ledger"].startswith(f"{configured}/dag_id=bulk_configured_ledger/run_id=")
    assert Path(summary["report"]).is_file()
    assert len(list(configured.rglob("journal-*.jsonl"))) == 1


def test_blank_lines_in_a_csv_file_are_not_counted(
    dag_runner: Any, sandbox: SandboxServer, tmp_path: Path
) -> None:
    from airflow_provider_ahachat.operators.ahachat import AddTagsOperator

    ids = sandbox.generate_users(2)
    audience = tmp_path / "audience.csv"
    audience.write_text(f"user_id\r\n{ids[0]}\r\n\r\n{ids[1]}\r\n\r\n\r\n", encoding="utf-8")
    with new_dag("bulk_blank_lines") as dag:
        AddTagsOperator(task_id="tags", recipients=str(audience), tags="x", ledger_path=str(tmp_path / "l"))

    result = run(dag_runner, dag, sandbox, tmp_path / "l")

    assert result.succeeded, result.summary()
    assert result.xcoms["tags"]["outcomes"] == {"delivered": 2}
    log = result.tasks["tags"].log
    assert "AhaChat add_tags for 2 recipients:" in log
    assert "AhaChat add_tags: 2 / 2 (100.0%) done" in log
