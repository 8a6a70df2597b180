"""
The DAGs of the scale scenario (``scripts/scale.sh``), two per way of limiting the rate.

- ``ahachat_scale_broadcast_<mode>``: the ``shipping_update`` broadcast to the big audience, mapped
  over the slice files on object storage (one task per file, so the Celery workers share them).
- ``ahachat_scale_second_<mode>``: another campaign (``payment_reminder``) on the same bot, run at
  the same time.

``<mode>`` is ``shared`` (the connection ``ahachat_scale_shared`` names a Redis connection: one
limit for the bot) or ``per_task`` (the connection ``ahachat_scale_per_task``: the same
``rate_limit``, but for each task on its own). The audience files and the ledger live on S3; their
locations come from the Airflow Variables ``ahachat_scale_audience`` and ``ahachat_scale_ledger``,
the number of slices from the environment variable ``AHACHAT_SCALE_SLICES``. A retried task (its
worker was lost) picks up from the ledger, on whichever worker runs it.
"""

from __future__ import annotations

import datetime
import os

import pendulum
from airflow.sdk import DAG

from airflow_provider_ahachat.operators.ahachat import BroadcastBlockOperator

SLICES = int(os.environ.get("AHACHAT_SCALE_SLICES", "8"))
AUDIENCE = "{{ var.value.ahachat_scale_audience }}"
LEDGER = "{{ var.value.ahachat_scale_ledger }}"

for mode in ("shared", "per_task"):
    defaults = {
        "ahachat_conn_id": f"ahachat_scale_{mode}",
        "retries": 3,
        "retry_delay": datetime.timedelta(seconds=1),
        "ledger_path": LEDGER,
        # A worker killed outright leaves the recipients it had claimed but not confirmed "unknown";
        # the retry looks each of them up and sends only to those the mark shows were never reached.
        "delivery_mark": "airflow_delivery",
        # What stays unknown (a lookup that failed too) is counted rather than failing the run.
        "max_failure_ratio": 0.05,
    }
    with DAG(
        dag_id=f"ahachat_scale_broadcast_{mode}",
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_tasks=32,
        default_args=defaults,
        tags=["ahachat", "scale"],
    ):
        BroadcastBlockOperator.partial(task_id="shipping_update", block_name="shipping_update").expand(
            recipients=[f"{AUDIENCE}/shipping-{part}.csv" for part in range(SLICES)]
        )

    with DAG(
        dag_id=f"ahachat_scale_second_{mode}",
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        default_args=defaults,
        tags=["ahachat", "scale"],
    ):
        BroadcastBlockOperator(
            task_id="payment_reminder", block_name="payment_reminder", recipients=f"{AUDIENCE}/second.csv"
        )
