"""
The sandbox's endpoints, one router per concern.

- :mod:`.api`: AhaChat's contract under ``/api``, what the provider's client talks to.
- :mod:`.control`: the control API under ``/_sandbox``, for tests and demos.
- :mod:`.answers`: the shape of every answer, success or error.
"""

from __future__ import annotations
