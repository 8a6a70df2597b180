"""
The how-to "Any other call": the hook and its client in plain Python, and a path no action wraps.

``tests/unit/test_docs_examples.py`` runs this file against the sandbox (the connection
``ahachat_default``) and checks what Lan received; it builds the operator in a DAG.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

# [START howto_hook]
from airflow_provider_ahachat.hooks.ahachat import AhaChatHook

client = AhaChatHook(ahachat_conn_id="ahachat_default").client  # one per hook
user = client.run("find_user", phone="+84908071111").data  # a User
client.run(
    "broadcast_block",
    {"block_name": "shipping_update", "attributes": {"order_id": "DH10231"}},
    user_id=user.messenger_user_id,
)
# [END howto_hook]

# [START howto_call]
AhaChatHook().call("GET", "/api/bots/{bot_id}/users", params={"phone": "+84908071111"})
# [END howto_call]

with DAG("howto_any_path", schedule=None, start_date=pendulum.datetime(2026, 1, 1)) as dag:
    # [START howto_api_operator]
    from airflow_provider_ahachat.operators.ahachat import AhaChatApiOperator

    AhaChatApiOperator(
        task_id="sequence",
        method="POST",
        path="/api/bots/{bot_id}/users/{{ ti.xcom_pull('find')['messenger_user_id'] }}/sequences",
        query={"source": "airflow"},  # the query string; `params` is Airflow's own argument
        json={"sequence": "Chăm sóc sau mua hàng"},
    )
    # [END howto_api_operator]
