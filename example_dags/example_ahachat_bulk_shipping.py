"""
Every morning, message every customer whose order shipped yesterday, straight from the shop's database.

- ``SqlToAhaChatOperator`` runs a query on the shop's database and starts the ``shipping_update``
  block for each row, with the row's order ID and tracking number saved as attributes first. It
  sends no message tag (Meta retired ``POST_PURCHASE_UPDATE`` on 27 April 2026): Messenger delivers
  the block to customers who wrote to the bot or tapped one of its buttons in the last 24 hours,
  and refuses it for the others, whom each task reports as ``outside_window`` (its summary line,
  its XCom and its report name them) without counting them against ``max_failure_ratio``.
- The audience is split into ``PARTS`` slices of the customer IDs and the operator is mapped over
  them, so that a Celery or Kubernetes executor runs the slices on several workers. Each mapped task
  sends at most ``RATE_LIMIT`` requests per second; put the tasks in an Airflow pool of ``N`` slots
  to cap the whole DAG at ``N x RATE_LIMIT``.
- Each task keeps a delivery ledger (under ``[ahachat] ledger_path``: use shared object storage such
  as ``s3://...`` when retries may land on another worker), so a retried or cleared task never
  messages a customer twice.
- A second mapped task tags the same customers ``da_gui_van_don`` (tags reach everyone: they are
  no message), so that the bot can tell those outside the window when they next write.

It talks to the connection ``ahachat_sandbox`` (the local sandbox, so that trying it messages
nobody) and reads the SQL connection ``shop_db``; set ``AHACHAT_CONN_ID`` and ``SHOP_DB_CONN_ID`` to
use your own. The query uses SQLite's ``:name`` parameters; other databases use their own style
(``%(name)s`` for PostgreSQL and MySQL).
"""

from __future__ import annotations

import datetime
import os
from typing import Any

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_ahachat.transfers.sql_to_ahachat import SqlToAhaChatOperator

AHACHAT_CONN_ID = os.environ.get("AHACHAT_CONN_ID", "ahachat_sandbox")
SHOP_DB_CONN_ID = os.environ.get("SHOP_DB_CONN_ID", "shop_db")
POOL = os.environ.get("AHACHAT_POOL", "default_pool")
PARTS = 4
RATE_LIMIT = float(os.environ.get("AHACHAT_RATE_LIMIT", "50"))  # requests per second, per task

SHIPPED_YESTERDAY = """
SELECT messenger_user_id, order_id, tracking_number
FROM orders
WHERE shipped_on = :day AND customer_id % :parts = :part
ORDER BY customer_id
"""

with DAG(
    dag_id="example_ahachat_bulk_shipping",
    description="Message every customer whose order shipped yesterday, from the shop's database",
    schedule="0 8 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="Asia/Ho_Chi_Minh"),
    catchup=False,
    default_args={"ahachat_conn_id": AHACHAT_CONN_ID, "pool": POOL},
    tags=["ahachat", "example"],
) as dag:

    @task
    def slices(ds: str | None = None) -> list[dict[str, Any]]:
        """One query parameter set per slice of the audience."""
        yesterday = (datetime.date.fromisoformat(ds) if ds else datetime.date.today()) - datetime.timedelta(
            days=1
        )
        return [{"day": yesterday.isoformat(), "part": part, "parts": PARTS} for part in range(PARTS)]

    audience = slices()

    shipping_update = SqlToAhaChatOperator.partial(
        task_id="shipping_update",
        sql_conn_id=SHOP_DB_CONN_ID,
        sql=SHIPPED_YESTERDAY,
        user_id_column="messenger_user_id",
        action="broadcast_block",
        block_name="shipping_update",
        rate_limit=RATE_LIMIT,
        concurrency=8,
        max_failure_ratio=0.01,
    ).expand(parameters=audience)

    tag_shipped = SqlToAhaChatOperator.partial(
        task_id="tag_shipped",
        sql_conn_id=SHOP_DB_CONN_ID,
        sql=SHIPPED_YESTERDAY,
        user_id_column="messenger_user_id",
        action="add_tags",
        tags="da_gui_van_don",
        rate_limit=RATE_LIMIT,
        concurrency=8,
        max_failure_ratio=0.01,
    ).expand(parameters=audience)

    shipping_update >> tag_shipped
