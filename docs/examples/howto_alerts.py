"""The how-to "Alerts": ``AhaChatNotifier``. ``tests/unit/test_docs_examples.py`` builds it."""

from __future__ import annotations

import pendulum

# [START howto_alerts]
from airflow.sdk import DAG

from airflow_provider_ahachat.notifications.ahachat import send_ahachat_notification

with DAG(
    "orders",
    start_date=pendulum.datetime(2026, 1, 1),
    on_failure_callback=send_ahachat_notification(
        user_ids=["6620193847561029"],
        text="{{ dag.dag_id }} failed in {{ ti.task_id }}: {{ exception }}",
    ),
) as dag:
    ...

# Or a block of yours, to user IDs or phones.
alert = send_ahachat_notification(
    phones=["+84 938 111 222"],
    block_name="ops_alert",  # shows {{alert}} and ends with a quick reply "Đã xem"
    attributes={"alert": "{{ dag.dag_id }}: {{ exception }}"},
)
# [END howto_alerts]
