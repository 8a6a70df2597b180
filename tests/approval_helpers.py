"""
Reading and tapping approval questions in tests with real Airflow processes: the questions in the
sandbox's outbox, their buttons and tokens, the task's record of each question (its XCom), and
when a task is parked for good (the scheduler has seen it wait).
"""

from __future__ import annotations

import json
from typing import Any

import requests
from airflow_processes import AirflowProcesses, wait_until

from airflow_provider_ahachat.inbound.answer import OUTCOME_HEADER
from airflow_provider_ahachat.inbound.tokens import AnswerToken, Question, peek
from airflow_provider_ahachat.sandbox import SandboxServer

#: Seconds a test waits for a question, a park or a run, on a loaded machine.
WAIT = 900.0


def trigger(airflow: AirflowProcesses, dag_id: str, conf: dict[str, Any] | None = None) -> str:
    """Start a run of ``dag_id`` through Airflow's public API; its run ID."""
    answer = requests.post(
        f"{airflow.url}/api/v2/dags/{dag_id}/dagRuns",
        json={"logical_date": None, "conf": conf or {}},
        headers=airflow.auth_headers,
        timeout=120,
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["dag_run_id"])


def questions(sandbox: SandboxServer, user_id: str, marker: str) -> list[dict[str, Any]]:
    """The user's outbox entries that ask a question whose text holds ``marker``, oldest first."""
    return [
        e
        for e in sandbox.outbox(user_id=user_id)
        if e["kind"] == "dynamic" and marker in json.dumps(e["messages"], ensure_ascii=False)
    ]


def buttons(entry: dict[str, Any]) -> dict[str, str]:
    """Title to URL of an entry's tap buttons (buttons or quick replies)."""
    message = entry["messages"][0]
    found = (message.get("attachment") or {}).get("payload", {}).get("buttons") or message.get(
        "quick_replies"
    )
    return {b["title"]: b["url"] for b in found if b["type"] == "json_plugin_url"}


def call(url: str, tapper: str) -> tuple[str, str]:
    """Call a button's URL as AhaChat does when ``tapper`` taps it: the outcome and the reply."""
    answer = requests.get(url.replace("{{messenger_user_id}}", tapper), timeout=120)
    assert answer.status_code == 200, answer.text
    return answer.headers[OUTCOME_HEADER], answer.json()["messages"][0]["text"]


def with_token(url: str, token: str) -> str:
    """The button's URL with another token."""
    base, _, rest = url.partition("?t=")
    return f"{base}?t={token}&{rest.split('&', 1)[1]}"


def token_of(url: str) -> AnswerToken:
    """What the token of a button's URL claims."""
    claim = peek(url.split("?t=", 1)[1].split("&", 1)[0])
    assert claim is not None
    return claim


def question_of(airflow: AirflowProcesses, token: AnswerToken) -> Question:
    """The record the task made of its question (its XCom), as Airflow's public API shows it."""
    entry = airflow.get_json(
        f"/api/v2/dags/{token.dag_id}/dagRuns/{token.run_id}/taskInstances/{token.task_id}"
        f"/xcomEntries/ahachat_question.{token.conn_id}?map_index={token.map_index}&deserialize=true"
    )
    assert entry is not None
    question = Question.from_json(entry["value"])
    assert question is not None, entry
    return question


def parked_state() -> str:
    """Where a task waits for its answer: ``awaiting_input`` from Airflow 3.3, ``deferred`` before."""
    from airflow.utils.state import TaskInstanceState

    return str(getattr(TaskInstanceState, "AWAITING_INPUT", TaskInstanceState.DEFERRED).value)


def parked_and_reaped(airflow: AirflowProcesses, token: AnswerToken) -> bool:
    """
    The try waits for its answer and the scheduler has read the exit of the worker that parked it
    (its log says so). Airflow 3.3's scheduler fails a task that is resumed before then; the
    Messenger answer path holds an early tap for a while (see plugins/hitl_answer), but how long the
    scheduler takes depends on its load. A person taps after that; so does the test.
    """
    finished_line = (
        f"TaskInstance Finished: dag_id={token.dag_id}, task_id={token.task_id}, run_id={token.run_id},"
    )
    return any(
        finished_line in line
        and f"state={parked_state()}," in line
        and f"try_number={token.try_number}," in line
        and f"map_index={token.map_index}," in line
        for line in airflow.log_tail(10**9).splitlines()
    )


def wait_for_park(airflow: AirflowProcesses, token: AnswerToken) -> None:
    """Wait until the question ``token`` answers is parked for good (:func:`parked_and_reaped`)."""
    where = f"{token.dag_id}.{token.task_id}[{token.map_index}]"
    what = f"the scheduler to see {where} try {token.try_number} parked"
    wait_until(lambda: parked_and_reaped(airflow, token), WAIT, what, 0.5)
