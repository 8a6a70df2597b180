"""Airflow plugins of the provider: the AhaChat webhook receiver on Airflow's API server."""

from __future__ import annotations
