"""
Provider metadata that Airflow reads through the ``apache_airflow_provider`` entry point.

The list of endpoints in the connection form comes from the registry
(:mod:`airflow_provider_ahachat.registry`), as everything that names the actions does.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_ahachat import __version__
from airflow_provider_ahachat.registry import ENDPOINTS

#: The connection form. Airflow 3.2+ renders it from here without importing the hook; older versions
#: get the same fields from ``AhaChatHook.get_ui_field_behaviour`` and ``get_connection_form_widgets``,
#: which read these two dictionaries too.
#:
#: Airflow's form shows the standard fields in a fixed order (Description, Host, Login, Password,
#: Port, Schema) and then the extra fields. So that the Bot ID and the Bot Token come first, the one
#: address field, Base URL, is an extra field (``base_url``); Host, Port and Schema are hidden (a URL
#: carries all three). Connections that give the address in ``host`` (``port``, ``schema``), as a
#: URI does, keep working.
UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["host", "port", "schema", "extra"],
    "relabeling": {
        "login": "Bot ID",
        "password": "Bot Token",
    },
    "placeholders": {
        "login": "12404829",
        "password": "the token from the bot's Settings in AhaChat",
        "base_url": "empty for the real service, https://ahachat.com",
        "timeout": "30",
        "connect_timeout": "10",
        "max_retries": "5",
        "rate_limit": "20",
        "concurrency": "16",
        "endpoints": f'{{"add_tags": "{ENDPOINTS["add_tags"]}"}}',
        "message_tags": "HUMAN_AGENT",
        "default_message_tag": "empty: no tag",
    },
}

CONN_FIELDS: dict[str, Any] = {
    "base_url": {
        "label": "Base URL",
        "schema": {"type": ["string", "null"]},
        "description": "Leave empty for the real service (https://ahachat.com). For the local sandbox: "
        "http://127.0.0.1:8790.",
    },
    "timeout": {
        "label": "Read timeout (seconds)",
        "schema": {"type": ["number", "null"], "minimum": 1},
        "description": "Optional. Seconds to wait for AhaChat's answer to one request. Default 30.",
    },
    "connect_timeout": {
        "label": "Connect timeout (seconds)",
        "schema": {"type": ["number", "null"], "minimum": 1},
        "description": "Optional. Seconds to wait while opening a connection. Default 10.",
    },
    "max_retries": {
        "label": "Max retries",
        "schema": {"type": ["integer", "null"], "minimum": 0},
        "description": "Optional. Retries after a rate limit (429) or a request that surely was not "
        "processed (connection refused, 503). Default 5.",
    },
    "rate_limit": {
        "label": "Rate limit (requests per second)",
        "schema": {"type": ["number", "null"], "minimum": 0},
        "description": "Optional. The most requests per second one task sends when it acts on many "
        "recipients; 0 for no limit. Operators can override it. Default 20.",
    },
    "concurrency": {
        "label": "Concurrency",
        "schema": {"type": ["integer", "null"], "minimum": 1},
        "description": "Optional. Requests one task keeps in flight at once when it acts on many "
        "recipients; the pace cannot pass concurrency / AhaChat's answer time. Operators can override "
        "it. Default: enough for the rate limit at 200 ms a request, at least 16.",
    },
    "rate_limit_redis_conn_id": {
        "label": "Shared rate limit: Redis connection ID",
        "schema": {"type": ["string", "null"]},
        "description": "Optional. An Airflow Redis connection. With it, the rate limit above belongs "
        "to the bot: every task on every worker that sends for this bot shares it, and a 429 pauses "
        "them all. Needs pip install 'airflow-provider-ahachat[redis]'.",
    },
    "endpoints": {
        "label": "Endpoint overrides (JSON)",
        "schema": {"type": ["string", "null"]},
        "description": "Optional. Corrects the paths AhaChat does not publish (all but the Broadcast "
        'API\'s): a JSON object of endpoint name to "METHOD /path" with {bot_id} and {user_id}, e.g. '
        f'{{"add_tags": "{ENDPOINTS["add_tags"]}"}}. Endpoints: {", ".join(ENDPOINTS)}.',
    },
    "message_tags": {
        "label": "Message tags the page may use",
        "schema": {"type": ["string", "null"]},
        "description": "Optional. The Messenger message tags this bot's page may still send, "
        "separated by commas (or a JSON list), instead of Meta's rule as of December 2026: HUMAN_AGENT "
        "only (a person's reply within 7 days, with Meta's Human Agent permission). Meta retired "
        "CONFIRMED_EVENT_UPDATE, POST_PURCHASE_UPDATE and ACCOUNT_UPDATE on 27 April 2026; "
        "NON_PROMOTIONAL_SUBSCRIPTION is for News Page Index pages only. Default: Meta's rule.",
    },
    "default_message_tag": {
        "label": "Default message tag",
        "schema": {"type": ["string", "null"]},
        "description": "Optional. The tag of a broadcast whose task names none; it must be one the "
        "page may use (above). Default: none, a standard message, which reaches customers who wrote "
        "in the last 24 hours.",
    },
    "answer_keys": {
        "label": "JSON API answer keys (JSON)",
        "schema": {"type": ["string", "null"]},
        "description": "Optional. Corrects the keys of the answer that carries held messages to the "
        "bot's JSON API block, which AhaChat does not publish (provisional: Chatfuel's): a JSON object "
        'of part to key, e.g. {"redirect_to_blocks": "redirect_to_blocks"}. Parts: messages, '
        "set_attributes, redirect_to_blocks.",
    },
    "webhook_secret": {
        "label": "Webhook secret",
        "schema": {"type": ["string", "null"], "format": "password"},
        "description": "Optional. The secret the bot's JSON API block sends in the X-AhaChat-Secret "
        "header to POST /ahachat/webhooks/<this connection>/<event> on Airflow's API server. "
        "Receiving is off without it. Use a long random value.",
    },
    "webhook_enabled": {
        "label": "Webhook enabled",
        "schema": {"type": ["boolean", "null"]},
        "description": "Optional. Off: calls with the right secret are refused (403). Default on.",
    },
    "webhook_user_id_field": {
        "label": "Webhook user ID field",
        "schema": {"type": ["string", "null"]},
        "description": "Optional. The body field that carries the customer's ID. Default messenger_user_id.",
    },
    "webhook_replies": {
        "label": "Webhook replies",
        "schema": {"type": ["string", "null"]},
        "description": "Optional. What the customer sees at once: one text, or a JSON object of event "
        'to text such as {"order_status": "Đang tra cứu đơn hàng…"} ("*" for any other event). '
        "Default: nothing.",
    },
    "webhook_events_per_minute": {
        "label": "Webhook events per minute",
        "schema": {"type": ["number", "null"], "minimum": 0},
        "description": "Optional. The most events a minute one connection records (per API server "
        "worker); more are refused with 429. 0 for no limit. Default 600.",
    },
    "approval_secret": {
        "label": "Approval secret",
        "schema": {"type": ["string", "null"], "format": "password"},
        "description": "Optional. Signs the buttons of Human-in-the-loop questions asked in Messenger "
        "(AhaChatApprovalOperator...); the webhook secret is used when this is empty. Use a long random "
        "value; changing it voids every button already sent.",
    },
}

#: Defaults of the bulk settings when neither the operator nor the connection gives them.
DEFAULT_RATE_LIMIT = 20.0
DEFAULT_CONCURRENCY = 16


def get_provider_info() -> dict[str, Any]:
    """Return the provider's metadata, as Airflow's providers manager expects it."""
    return {
        "package-name": "airflow-provider-ahachat",
        "name": "AhaChat",
        "description": "`AhaChat <https://ahachat.com/>`__, the chatbot builder for Facebook Messenger.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "AhaChat",
                "external-doc-url": "https://ahachat.com/",
                "tags": ["service"],
            }
        ],
        "hooks": [
            {"integration-name": "AhaChat", "python-modules": ["airflow_provider_ahachat.hooks.ahachat"]}
        ],
        "operators": [
            {
                "integration-name": "AhaChat",
                "python-modules": ["airflow_provider_ahachat.operators.ahachat"],
            }
        ],
        "transfers": [
            {
                "source-integration-name": "Common SQL",
                "target-integration-name": "AhaChat",
                "python-module": "airflow_provider_ahachat.transfers.sql_to_ahachat",
            }
        ],
        "config": {
            "ahachat": {
                "description": "Settings of the AhaChat provider.",
                "options": {
                    "ledger_path": {
                        "description": "Where bulk sends keep their delivery ledger: a local folder or "
                        "an object storage URL such as s3://aws_default@bucket/ahachat. Use shared "
                        "storage when task retries may run on another worker. Operators can override "
                        "it with ledger_path.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "s3://aws_default@my-bucket/ahachat-ledger",
                        "default": None,
                    },
                    "held_path": {
                        "description": "Where messages held until the customer writes "
                        '(outside_window="hold") are kept on one machine: an SQLite file on a local '
                        "disk that the workers and the API server share. Default "
                        "$AIRFLOW_HOME/ahachat/held.sqlite3. Not used when held_conn_id is set.",
                        "version_added": "0.5.0",
                        "type": "string",
                        "example": "/var/lib/airflow/ahachat/held.sqlite3",
                        "default": None,
                    },
                    "held_conn_id": {
                        "description": "For deployments on several machines: an Airflow connection to "
                        "a PostgreSQL database (never Airflow's own metadata database) where held "
                        "messages are kept, reached by every worker and API server. Needed when "
                        "ledger_path is on object storage.",
                        "version_added": "0.5.0",
                        "type": "string",
                        "example": "ahachat_held_db",
                        "default": None,
                    },
                    "connection_test_port_fix": {
                        "description": "On Airflow 3.3.0 to 3.3.2, the UI's Test button sends port 0 for "
                        "a connection without a port, and the API refuses it as a different destination. "
                        "The provider's API server middleware sends no port instead, for ahachat "
                        "connections only, as later Airflow releases do themselves; it stays off where "
                        "Airflow has the fix. Set False to turn it off.",
                        "version_added": "0.2.0",
                        "type": "boolean",
                        "example": "False",
                        "default": "True",
                    },
                },
            }
        },
        "sensors": [
            {"integration-name": "AhaChat", "python-modules": ["airflow_provider_ahachat.sensors.ahachat"]}
        ],
        "triggers": [
            {
                "integration-name": "AhaChat",
                "python-modules": ["airflow_provider_ahachat.triggers.ahachat"],
            }
        ],
        "notifications": ["airflow_provider_ahachat.notifications.ahachat.AhaChatNotifier"],
        "connection-types": [
            {
                "hook-class-name": "airflow_provider_ahachat.hooks.ahachat.AhaChatHook",
                "hook-name": "AhaChat",
                "connection-type": "ahachat",
                "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
                "conn-fields": CONN_FIELDS,
            }
        ],
    }
