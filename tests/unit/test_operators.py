"""Every operator inside Airflow (``dag.test()``), against the sandbox over loopback HTTP."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import pytest
from helpers.dag_helpers import CONN, new_dag, operator_for, run_without_token
from helpers.paths import load_example_dag as example_dag

from airflow_provider_ahachat.sandbox import SandboxServer
from airflow_provider_ahachat.sandbox.server import connection_uri

LAN = "3824547807572463"  # Nguyễn Thị Lan: wrote 30 minutes ago, tags khach_quen and vip
BAO = "5310298476123984"  # Phạm Quốc Bảo: last wrote 3 days ago
MINH = "4102938475610293"  # Trần Văn Minh: wrote 2 hours ago

pytestmark = pytest.mark.usefixtures("airflow_db")


def run(dag_runner: Any, dag: Any, sandbox: SandboxServer, uri: str | None = None, **kwargs: Any) -> Any:
    """Run ``dag``; the token appears nowhere: not in the log, the errors, nor XCom."""
    return run_without_token(dag_runner, dag, sandbox, {CONN: uri or sandbox.connection_uri}, **kwargs)


def rendered_fields(dag_id: str) -> dict[str, Any]:
    """What the UI's "Rendered Templates" view shows: the rendered fields stored per task."""
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(RenderedTaskInstanceFields).filter_by(dag_id=dag_id).all()
        return {row.task_id: row.rendered_fields for row in rows}


def api_requests(sandbox: SandboxServer) -> list[dict[str, Any]]:
    return sandbox.request_log(limit=1000)


def test_the_operator_of_every_action_acts_once(dag_runner: Any, sandbox: SandboxServer) -> None:
    """The operator of each action of the registry about a customer, with its example arguments."""
    from airflow_provider_ahachat.registry import ACTIONS

    actions = [name for name, action in ACTIONS.items() if action.addresses_customer]
    customers = dict(zip(actions, sandbox.generate_users(len(actions)), strict=True))  # one each
    with new_dag("every_action") as dag:
        for name, uid in customers.items():
            operator_for(name)(task_id=name, user_id=uid, **ACTIONS[name].example())

    result = run(dag_runner, dag, sandbox)

    assert result.succeeded, result.summary()
    for name, uid in customers.items():
        xcom = result.xcoms[name]
        assert uid in (xcom.get("user_id"), xcom.get("messenger_user_id")), (name, xcom)
    messaged = {uid: 1 for name, uid in customers.items() if ACTIONS[name].sends_message}
    assert sandbox.outbox_counts() == messaged
    assert len(api_requests(sandbox)) == len(actions)


def test_templates_and_xcom_args_are_rendered_before_validation(
    dag_runner: Any, sandbox: SandboxServer
) -> None:
    from airflow.sdk import task

    from airflow_provider_ahachat.operators.ahachat import (
        AddAttributesOperator,
        AddTagsOperator,
        BroadcastBlockOperator,
        SendDynamicMessageOperator,
    )

    with new_dag("templated") as dag:

        @task
        def audience() -> dict[str, Any]:
            return {"user_id": LAN, "tags": ["mua_{{ not rendered }}", "thang_11"], "order": "Đơn hàng #123"}

        who = audience()
        attrs = AddAttributesOperator(
            task_id="attrs",
            user_id="{{ ti.xcom_pull(task_ids='audience')['user_id'] }}",
            attributes={
                "run": "{{ dag.dag_id }}",
                "order": "{{ ti.xcom_pull(task_ids='audience')['order'] }}",
            },
        )
        tags = AddTagsOperator(task_id="tags", user_id=who["user_id"], tags=who["tags"])
        dynamic = SendDynamicMessageOperator(
            task_id="dynamic",
            user_id=LAN,
            message='{"messages": [{"text": "Chào {{ params.name }}"}], '
            '"set_attributes": {"seen": "{{ dag.dag_id }}"}}',
            params={"name": "Nguyễn Thị Lan"},
        )
        broadcast = BroadcastBlockOperator(
            task_id="broadcast",
            phone="{{ params.phone }}",
            block_name="{{ params.block }}",
            message_tag="{{ params.tag }}",
            attributes='{"order_id": "{{ params.order }}", "tracking_number": "X1"}',
            params={
                "phone": "+84 912 345 678",
                "block": "shipping_update",
                "tag": "human_agent",
                "order": "A9",
            },
        )
        who >> [attrs, tags, dynamic, broadcast]

    result = run(dag_runner, dag, sandbox)

    assert result.succeeded, result.summary()
    lan = sandbox.user(LAN)
    assert lan["attributes"]["run"] == "templated"
    assert lan["attributes"]["order"] == "Đơn hàng #123"
    assert lan["attributes"]["seen"] == "templated"
    # A value that came through XCom is data, not a template: it is sent as it was.
    assert {"mua_{{ not rendered }}", "thang_11"} <= set(lan["tags"])
    (dynamic_entry,) = [e for e in sandbox.outbox(LAN) if e["kind"] == "dynamic"]
    assert "Chào Nguyễn Thị Lan" in json.dumps(dynamic_entry, ensure_ascii=False)
    (broadcast_entry,) = sandbox.outbox(MINH)
    assert (broadcast_entry["block_name"], broadcast_entry["message_tag"]) == (
        "shipping_update",
        "HUMAN_AGENT",
    )
    assert "A9" in json.dumps(broadcast_entry, ensure_ascii=False)
    # The rendered fields, as the UI shows them, hold the rendered values and no token.
    rendered = rendered_fields("templated")
    assert rendered["attrs"]["user_id"] == LAN
    assert rendered["attrs"]["attributes"]["run"] == "templated"
    assert rendered["broadcast"]["message_tag"] == "human_agent"
    assert sandbox.token not in json.dumps(rendered, default=str, ensure_ascii=False)


BAD_INPUTS: list[tuple[str, str, dict[str, Any], str]] = [
    ("FindUserOperator", "find_both", {"user_id": LAN, "phone": "+84908071111"}, "give exactly one"),
    ("FindUserOperator", "find_bad_phone", {"phone": "090-ABC"}, "phone: '090-ABC' is not a phone number"),
    ("AddTagsOperator", "tags_empty", {"user_id": LAN, "tags": []}, "tags: must name at least one tag"),
    (
        "RemoveTagsOperator",
        "untag_blank",
        {"user_id": LAN, "tags": [""]},
        "tags[0]: a tag must be a non-empty",
    ),
    (
        "AddAttributesOperator",
        "attrs_reserved",
        {"user_id": LAN, "attributes": {"ahachat_token[]": "1"}},
        "attribute name 'ahachat_token[]' is reserved by the Broadcast API",
    ),
    (
        "AddAttributesOperator",
        "attrs_nested",
        {"user_id": LAN, "attributes": {"cart": None}},
        "attributes.cart: values must be text, numbers, booleans, dates, datetimes, lists or objects",
    ),
    ("AddAttributesOperator", "attrs_json", {"user_id": LAN, "attributes": "{oops"}, "not valid JSON"),
    ("ResetAttributesOperator", "reset_none", {"user_id": LAN, "attributes": []}, "must name at least one"),
    ("SendTextMessageOperator", "text_long", {"user_id": LAN, "text": "x" * 2001}, "at most 2000 characters"),
    ("SendTextMessageOperator", "text_float_id", {"user_id": 3.8e15, "text": "hi"}, "got the float"),
    (
        "SendDynamicMessageOperator",
        "dynamic_buttons",
        {
            "user_id": LAN,
            "message": {
                "messages": [
                    {"text": "a"},
                    {"text": "b"},
                    {
                        "attachment": {
                            "type": "template",
                            "payload": {
                                "template_type": "button",
                                "text": "?",
                                "buttons": [{"type": "show_block", "block_name": "m", "title": "M"}] * 4,
                            },
                        }
                    },
                ]
            },
        },
        "messages[2].attachment.payload.buttons: at most 3",
    ),
    (
        "BroadcastBlockOperator",
        "broadcast_tag",
        {"user_id": LAN, "block_name": "welcome", "message_tag": "PROMOTION"},
        "message_tag: 'PROMOTION' is not a message tag Messenger accepts",
    ),
    (
        "BroadcastBlockOperator",
        "broadcast_reserved",
        {"user_id": LAN, "block_name": "welcome", "attributes": {"ahachat_block_name": "x"}},
        "'ahachat_block_name' is reserved by the Broadcast API",
    ),
    (
        "BroadcastBlockOperator",
        "broadcast_no_block",
        {"user_id": LAN, "block_name": " "},
        "block_name: must be",
    ),
]


def test_bad_input_fails_before_anything_is_sent(dag_runner: Any, sandbox: SandboxServer) -> None:
    from airflow_provider_ahachat.operators import ahachat

    with new_dag("bad_input") as dag:
        for class_name, task_id, kwargs, _ in BAD_INPUTS:
            getattr(ahachat, class_name)(task_id=task_id, **kwargs)

    result = run(dag_runner, dag, sandbox)

    assert set(result.task_states.values()) == {"failed"}, result.summary()
    for _, task_id, _, message in BAD_INPUTS:
        assert message in (result.tasks[task_id].error_text or ""), (
            task_id,
            result.tasks[task_id].error_text,
        )
    assert api_requests(sandbox) == []
    assert sandbox.outbox() == []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("wrong_token", "AhaChatAuthError"),
        ("unknown_user", "AhaChatNotFoundError"),
        ("server_error", "AhaChatServerError"),
        ("refused_port", "AhaChatConnectionError"),
        ("timeout", "AhaChatTimeoutError"),
        ("outside_window", "AhaChatOutsideWindowError"),
    ],
)
def test_failures_name_the_problem_and_never_the_token(
    dag_runner: Any, sandbox: SandboxServer, case: str, expected: str
) -> None:
    from airflow_provider_ahachat.operators.ahachat import SendTextMessageOperator

    uri = sandbox.connection_uri
    user = LAN
    if case == "wrong_token":
        uri = connection_uri(sandbox.url, sandbox.bot_id, "f" * 64)
    elif case == "unknown_user":
        user = "1111111111111111"
    elif case == "server_error":
        sandbox.configure(fail_next=[500], deliver_before_fail=True)
    elif case == "refused_port":
        uri = connection_uri(f"http://127.0.0.1:{free_port()}", sandbox.bot_id, sandbox.token)
        uri += "?max_retries=1"
    elif case == "timeout":
        sandbox.configure(latency_ms=1500)
        uri += "?timeout=1"
    elif case == "outside_window":
        user = BAO

    with new_dag(f"fail_{case}") as dag:
        SendTextMessageOperator(task_id="send", user_id=user, text="Chào bạn")

    result = run(dag_runner, dag, sandbox, uri=uri)

    assert result.task_states == {"send": "failed"}, result.summary()
    error = result.tasks["send"].error
    assert type(error).__name__ == expected, result.tasks["send"].error_text
    assert expected in result.log
    if case in ("server_error", "timeout"):
        assert "outcome is unknown" in str(error)
        # The sandbox did deliver it (after the client gave up, for the timeout), and it was not
        # sent again: the outcome really was unknown to the client.
        deadline = time.monotonic() + 5
        while not sandbox.outbox(LAN) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [e["kind"] for e in sandbox.outbox(LAN)] == ["text"]
        assert len([r for r in api_requests(sandbox) if r["path"].endswith("/messages")]) == 1


def load_example_dag() -> Any:
    return example_dag("example_ahachat_shipping_update")


def test_the_example_dag_runs_end_to_end(dag_runner: Any, sandbox: SandboxServer) -> None:
    from airflow.sdk import DAG

    dag = load_example_dag()
    assert isinstance(dag, DAG)
    before = sandbox.user(LAN)
    assert "cho_giao_hang" in before["tags"]
    assert "gio_hang" in before["attributes"]
    result = dag_runner(dag, {"ahachat_sandbox": sandbox.connection_uri})

    assert result.succeeded, result.summary()
    kinds = sorted((e["kind"], e["messenger_user_id"]) for e in sandbox.outbox())
    assert kinds == sorted([("broadcast", LAN), ("broadcast", MINH), ("text", LAN), ("dynamic", LAN)])
    # Bảo last wrote 3 days ago: asked once, refused by Messenger, reported by name, not a failure.
    summary = result.xcoms["notify_shipped"]
    assert summary["outcomes"] == {"delivered": 2, "outside_window": 1}
    assert summary["outside_window"] == [{"row": 3, "recipient": "phone +84903456789"}]
    assert "1 outside the 24-hour window, not counted as failures" in result.log
    assert [r["status"] for r in api_requests(sandbox) if r["path"].endswith("/phones/send")] == [
        200,
        200,
        422,
    ]
    assert sandbox.user(BAO)["attributes"]["tracking_number"] == "GHN8123458VN"  # saved for later
    lan = sandbox.user(LAN)
    assert "da_giao_van" in lan["tags"] and "cho_giao_hang" not in lan["tags"]
    assert "gio_hang" not in lan["attributes"]
    assert lan["attributes"]["tracking_number"] == "GHN8123456VN"
    result.assert_not_in_log(sandbox.token)


def test_strings_without_jinja_are_not_compiled_as_templates(dag_runner: Any, sandbox: SandboxServer) -> None:
    # Airflow compiles each string of a templated list as a template (about 1 ms each); plain strings
    # are handed back as they are, so a long literal list of recipients renders at once.
    from airflow_provider_ahachat.operators.ahachat import AddTagsOperator

    operator = AddTagsOperator(task_id="t", tags="x", recipients=[])
    plain = "3824547807572463"
    rows = [plain, {"user_id": plain, "order_id": "DH1"}, "{{ 40 + 2 }}", "x.csv"]
    rendered = operator.render_template(rows, {}, operator.get_template_env())
    assert rendered[0] is plain and rendered[1]["user_id"] is plain
    assert rendered == [plain, {"user_id": plain, "order_id": "DH1"}, "42", "x.csv"]
