"""Apache Airflow provider for AhaChat, the chatbot builder for Facebook Messenger."""

from __future__ import annotations

__version__ = "0.5.0"

__all__ = ["__version__"]
