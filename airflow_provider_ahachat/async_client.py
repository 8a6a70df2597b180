"""The asyncio client, under the name it had before it moved into :mod:`airflow_provider_ahachat.client`."""

from __future__ import annotations

from airflow_provider_ahachat.client import AsyncAhaChatClient

__all__ = ["AsyncAhaChatClient"]
