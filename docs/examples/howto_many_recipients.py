"""
The how-tos "Many recipients" and "SQL to chat": an audience from a file, a list, an XCom or a query.

The docs include the parts between the markers. ``tests/unit/test_docs_examples.py`` builds this DAG
(every argument checked as Airflow and the operators check them when a DAG is parsed) and runs the
list part against the sandbox; the file and the query name the reader's own bucket and database.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, task

# [START howto_recipients]
from airflow_provider_ahachat.operators.ahachat import AddTagsOperator, BroadcastBlockOperator

# [END howto_recipients]
# [START howto_sql_import]
from airflow_provider_ahachat.transfers.sql_to_ahachat import SqlToAhaChatOperator

# [END howto_sql_import]


@task
def find_repeat_buyers() -> list[str]:
    """The reader's own task: here two of the sandbox's customers."""
    return ["3824547807572463", "4102938475610293"]


with DAG("howto_many_recipients", schedule=None, start_date=pendulum.datetime(2026, 1, 1)) as dag:
    # [START howto_recipients_body]
    # A file, read row by row (CSV with a header, or JSON Lines), locally or on object storage.
    # Columns: user_id or phone, and for broadcasts and attributes, any other column is an attribute.
    BroadcastBlockOperator(
        task_id="shipping_update",
        block_name="shipping_update",
        recipients="s3://aws_default@shop-exports/shipped/{{ dag_run.run_after | ds }}.csv",
        rate_limit=50,
    )

    # A list or an XCom (here a @task that returns a list): user IDs, or dicts with user_id or
    # phone and their own attributes.
    AddTagsOperator(task_id="loyal", tags="loyal", recipients=find_repeat_buyers())
    # [END howto_recipients_body]

    # [START howto_sql]
    # Any Airflow SQL connection; rows are fetched 1,000 at a time, never all at once.
    SqlToAhaChatOperator(
        task_id="shipping_update_from_db",
        sql_conn_id="shop_postgres",
        sql="SELECT messenger_user_id, order_id, tracking_number FROM orders WHERE shipped_on = %(day)s",
        parameters={"day": "{{ macros.ds_add(dag_run.run_after | ds, -1) }}"},
        user_id_column="messenger_user_id",
        action="broadcast_block",  # or add_tags, remove_tags, add_attributes, reset_attributes, ...
        block_name="shipping_update",
        dedupe_on=["order_id"],  # one message per (customer, order); without it, one per customer
    )
    # [END howto_sql]
