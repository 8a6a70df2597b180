"""Provider metadata that Airflow reads through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

from airflow_provider_ahachat import __version__

#: The connection form. Airflow 3.2+ renders it from here without importing the hook; older versions
#: get the same fields from ``AhaChatHook.get_ui_field_behaviour`` and ``get_connection_form_widgets``,
#: which read these two dictionaries too.
UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["extra"],
    "relabeling": {
        "login": "Bot ID",
        "password": "Bot Token",
        "host": "Base URL",
        "schema": "Scheme",
    },
    "placeholders": {
        "login": "12404829",
        "password": "the token from the bot's Settings in AhaChat",
        "host": "https://ahachat.com (leave empty for the real service)",
        "schema": "https",
        "port": "443",
        "timeout": "30",
        "connect_timeout": "10",
        "max_retries": "5",
        "rate_limit": "20",
        "concurrency": "16",
    },
}

CONN_FIELDS: dict[str, Any] = {
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
                    }
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
