"""
The how-to "When the bot calls Airflow", tried offline: the sandbox's bot calls a webhook.

``tests/unit/test_docs_examples.py`` calls :func:`lan_sends_her_order_code` with a sandbox and a server
standing for Airflow's, and checks the call that arrived.
"""

from __future__ import annotations

from airflow_provider_ahachat.sandbox import SandboxServer

LAN = "3824547807572463"


def lan_sends_her_order_code(sandbox: SandboxServer, airflow_url: str, secret: str) -> None:
    """The bot's block ``hoi_don_hang`` calls Airflow; Lan gives her order code and reaches it."""
    # [START howto_offline]
    sandbox.set_json_api(
        "hoi_don_hang",
        {
            "url": f"{airflow_url}/ahachat/webhooks/ahachat_sandbox/order_status",
            "headers": {"X-AhaChat-Secret": secret},
            "body": {"messenger_user_id": "{{messenger_user_id}}", "order_code": "{{order_code}}"},
        },
    )
    sandbox.update_user(LAN, attributes={"order_code": "DH10231"})
    sandbox.update_user(LAN, run_block="hoi_don_hang")  # Lan sends her order code
    # [END howto_offline]
