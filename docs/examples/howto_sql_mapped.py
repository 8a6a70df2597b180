"""
The how-to "Running at scale", beyond one worker: eight slices of one query, mapped.

``tests/integration/test_docs_examples_postgres.py`` runs it with ``dag.test()`` against a PostgreSQL
database shaped as it expects and the sandbox, and checks that every customer was messaged once.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_ahachat.transfers.sql_to_ahachat import SqlToAhaChatOperator

with DAG("howto_sql_mapped", schedule=None, start_date=pendulum.datetime(2026, 1, 1)) as dag:
    # [START howto_sql_mapped]
    @task
    def slices(ds: str | None = None) -> list[dict[str, object]]:
        return [{"day": ds, "part": part, "parts": 8} for part in range(8)]

    SqlToAhaChatOperator.partial(
        task_id="shipping_update",
        sql_conn_id="shop_postgres",
        sql="SELECT messenger_user_id, tracking_number FROM orders"
        " WHERE shipped_on = %(day)s AND MOD(customer_id, %(parts)s) = %(part)s",
        user_id_column="messenger_user_id",
        action="broadcast_block",
        block_name="shipping_update",
        rate_limit=50,  # per task
        pool="ahachat",  # a pool of 4 slots caps the whole DAG at 4 x 50 = 200 requests/s
    ).expand(parameters=slices())
    # [END howto_sql_mapped]
