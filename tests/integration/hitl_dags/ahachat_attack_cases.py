"""
DAGs for the attack on the plugin's routes (tests/test_inbound_attack.py): questions asked through
two connections, in two runs, from a mapped task, with short and long deadlines, and DAGs that read
the events the webhook records. ``SHOP_OWNER_ID`` comes from the environment.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_ahachat.events import ahachat_event, customer_events
from airflow_provider_ahachat.operators.hitl import AhaChatApprovalOperator

OWNER = os.environ.get("SHOP_OWNER_ID", "6620193847561029")
CONN_A, CONN_B = "shop_a", "shop_b"
LONG = timedelta(hours=1)
SHORT = timedelta(seconds=int(os.environ.get("HITL_SHORT_TIMEOUT", "8")))
START = pendulum.datetime(2026, 1, 1, tz="UTC")
ARGS: dict[str, Any] = {"retries": 0}


def ask(task_id: str, subject: str, conn_id: str = CONN_A, timeout: timedelta = LONG) -> None:
    """A question to the owner through ``conn_id``; without defaults, it fails at its deadline."""
    AhaChatApprovalOperator(
        task_id=task_id, subject=subject, approvers=OWNER, ahachat_conn_id=conn_id, response_timeout=timeout
    )


with DAG("attack_ask_a", schedule=None, start_date=START, default_args=ARGS):
    ask("ask", "Duyệt qua shop A?")
    AhaChatApprovalOperator.partial(
        task_id="ask_mapped", approvers=OWNER, ahachat_conn_id=CONN_A, response_timeout=LONG
    ).expand(subject=["Duyệt phần 0?", "Duyệt phần 1?"])

with DAG("attack_ask_b", schedule=None, start_date=START, default_args=ARGS):
    ask("ask", "Duyệt qua shop B?", conn_id=CONN_B)

with DAG("attack_deadline", schedule=None, start_date=START, default_args=ARGS):
    ask("short", "Hạn ngắn?", timeout=SHORT)  # the scheduler's sweep fails it, once the test lets it
    for name in ("long", "marked_failed", "marked_success"):
        ask(name, f"Hạn dài ({name})?")

with DAG("attack_events", schedule=[ahachat_event("attack", ahachat_conn_id=CONN_A)], start_date=START):

    @task
    def read_events(triggering_asset_events: Any = None) -> int:
        """Every event of the run, as a task reads them through the Execution API."""
        events = customer_events(triggering_asset_events)
        if not events:
            raise ValueError("no event in this run")
        return len(events)

    read_events()

# Another writer records a bad value on this one's asset (Airflow's public route takes NaN);
# its runs are not looked at.
with DAG("attack_keys", schedule=[ahachat_event("keys", ahachat_conn_id=CONN_A)], start_date=START):

    @task
    def ignore(triggering_asset_events: Any = None) -> None:
        return None

    ignore()
