"""The operators' ``recipients=`` inside Airflow (``dag.test()``), against the sandbox over HTTP."""

from __future__ import annotations

import datetime
import json
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_ahachat.sandbox import SandboxServer

CONN = "aha"
LAN = "3824547807572463"  # a seeded customer, with tags khach_quen and vip

pytestmark = pytest.mark.usefixtures("airflow_db")


def new_dag(dag_id: str, **kwargs: Any) -> Any:
    from airflow.sdk import DAG

    return DAG(dag_id, schedule=None, default_args={"ahachat_conn_id": CONN, "retries": 0}, **kwargs)


def unknown_id(number: int) -> str:
    """A user ID that no sandbox user has (generated users' IDs start with 9)."""
    return f"8{number:015d}"


def run(dag_runner: Any, dag: Any, sandbox: SandboxServer, ledger: Path | None = None, **kwargs: Any) -> Any:
    """Run ``dag``; check that the token is nowhere: log, XCom, errors, report and journal files."""
    result = dag_runner(dag, {CONN: sandbox.connection_uri}, **kwargs)
    xcoms = json.dumps(result.xcoms, default=str, ensure_ascii=False)
    errors = "\n".join(t.error_text or "" for t in result.tasks.values())
    for text in (result.log, xcoms, errors):
        assert sandbox.token not in text
    if ledger is not None:
        for path in ledger.rglob("*"):
            if path.is_file():
                assert sandbox.token not in path.read_text(encoding="utf-8"), path
    return result


def report(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-recipient report a summary points to."""
    text = Path(summary["report"]).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


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


# --------------------------------------------------------------------------- 1. every operator


def test_every_audience_operator_acts_once_on_each_recipient(
    dag_runner: Any, sandbox: SandboxServer, tmp_path: Path
) -> None:
    from airflow_provider_ahachat.operators.ahachat import (
        AddAttributesOperator,
        AddTagsOperator,
        BroadcastBlockOperator,
        RemoveTagsOperator,
        ResetAttributesOperator,
        SendDynamicMessageOperator,
        SendTextMessageOperator,
    )

    groups = {name: sandbox.generate_users(3, start=10 * i) for i, name in enumerate(
        ["tags", "untag", "attrs", "reset", "text", "dynamic", "broadcast"]
    )}
    for uid in groups["untag"]:
        sandbox.update_user(uid, add_tags=["cu", "giu_lai"])
    for uid in groups["reset"]:
        sandbox.update_user(uid, attributes={"gio_hang": "2 áo", "city": "Huế"})
    ledger = str(tmp_path / "ledger")

    with new_dag("bulk_every_operator") as dag:
        AddTagsOperator(
            task_id="tags", recipients=groups["tags"], tags=["thang_11", "vip"], ledger_path=ledger
        )
        RemoveTagsOperator(task_id="untag", recipients=groups["untag"], tags="cu", ledger_path=ledger)
        AddAttributesOperator(
            task_id="attrs",
            recipients=[{"user_id": uid, "diem": n} for n, uid in enumerate(groups["attrs"])],
            attributes={"chien_dich": "black_friday"},
            ledger_path=ledger,
        )
        ResetAttributesOperator(
            task_id="reset", recipients=groups["reset"], attributes=["gio_hang"], ledger_path=ledger
        )
        SendTextMessageOperator(
            task_id="text", recipients=groups["text"], text="Chào bạn! Sale 11.11", ledger_path=ledger
        )
        SendDynamicMessageOperator(
            task_id="dynamic",
            recipients=groups["dynamic"],
            message=[{"text": "Chọn size:", "quick_replies": [{"title": "M", "block_name": "size_m"}]}],
            ledger_path=ledger,
        )
        BroadcastBlockOperator(
            task_id="broadcast",
            recipients=groups["broadcast"],
            block_name="shipping_update",
            message_tag="POST_PURCHASE_UPDATE",
            attributes={"order_id": "DH1", "tracking_number": "GHN1"},
            ledger_path=ledger,
        )

    result = run(dag_runner, dag, sandbox, tmp_path / "ledger")

    assert result.succeeded, result.summary()
    actions = {
        "tags": "add_tags",
        "untag": "remove_tags",
        "attrs": "add_attributes",
        "reset": "reset_attributes",
        "text": "send_text",
        "dynamic": "send_message",
        "broadcast": "broadcast_block",
    }
    for task_id, action in actions.items():
        summary = result.xcoms[task_id]
        assert_is_summary(summary, action, {"delivered": 3})
        assert f"task_id={task_id}" in summary["report"]
        assert [line["outcome"] for line in report(summary)] == ["delivered"] * 3
    # One request per recipient, each recipient named once.
    assert user_requests(sandbox) == Counter({uid: 1 for uids in groups.values() for uid in uids})
    for uid in groups["tags"]:
        assert set(sandbox.user(uid)["tags"]) == {"thang_11", "vip"}
    for uid in groups["untag"]:
        assert sandbox.user(uid)["tags"] == ["giu_lai"]
    for n, uid in enumerate(groups["attrs"]):
        assert sandbox.user(uid)["attributes"] == {"chien_dich": "black_friday", "diem": n}
    for uid in groups["reset"]:
        assert sandbox.user(uid)["attributes"] == {"city": "Huế"}
    messaged = {uid: kind for kind in ("text", "dynamic", "broadcast") for uid in groups[kind]}
    assert sandbox.outbox_counts() == dict.fromkeys(messaged, 1)
    for entry in sandbox.outbox():
        assert entry["kind"] == messaged[entry["messenger_user_id"]]
        if entry["kind"] == "broadcast":
            assert entry["message_tag"] == "POST_PURCHASE_UPDATE"
            assert "DH1" in entry["text"] and "GHN1" in entry["text"]


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
        "message_tag": "POST_PURCHASE_UPDATE",
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


@pytest.mark.parametrize(
    ("total", "limits"),
    [
        pytest.param(10_000, {"max_failure_ratio": 0.05, "max_failures": None}, id="ratio"),
        # The same with the default max_failures=0, on fewer recipients to keep the suite quick.
        pytest.param(2_000, {}, id="default"),
    ],
)
def test_many_recipients_with_three_percent_unknown(
    dag_runner: Any, sandbox: SandboxServer, tmp_path: Path, total: int, limits: dict[str, Any]
) -> None:
    from airflow_provider_ahachat.operators.ahachat import BroadcastBlockOperator

    audience, unknown = audience_with_unknowns(sandbox, total)
    reachable = [uid for uid in audience if uid not in set(unknown)]
    assert (len(audience), len(unknown), len(reachable)) == (total, total * 3 // 100, total * 97 // 100)
    # A large audience comes as a file: a literal list in a templated field is rendered item by item.
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
    else:
        assert outcome.state == "failed", result.summary()
        error = outcome.error
        assert type(error).__name__ == "AhaChatBulkError", outcome.error_text
        message = str(error)
        assert f"{failures} of {total} rows were not delivered, more than max_failures=0 allow" in message
        assert f"({delivered} delivered, {failures} failed)" in message
        assert f"First: row {first_row} user {first}: " in message
        assert "not found" in message
        summary = error.summary  # type: ignore[union-attr]
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
    assert took < 60, f"{total:,} recipients took {took:.1f}s"
    print(f"{total:,} recipients: the DAG run took {took:.1f}s, the bulk run {summary['seconds']}s")
