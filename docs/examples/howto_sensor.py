"""The how-to "Waiting for an answer": ``UserSensor``. ``tests/unit/test_docs_examples.py`` builds it."""

from __future__ import annotations

# [START howto_sensor]
from datetime import timedelta

from airflow.sdk import DAG

from airflow_provider_ahachat.sensors.ahachat import UserSensor

with DAG("howto_sensor", schedule=None, params={"customer_id": "3824547807572463"}) as dag:
    UserSensor(
        task_id="wait_for_confirmation",
        user_id="{{ params.customer_id }}",
        attributes={"delivery_confirmed": "yes"},
        deferrable=True,
        poke_interval=timedelta(minutes=5),
        timeout=timedelta(days=3),
    )
# [END howto_sensor]
