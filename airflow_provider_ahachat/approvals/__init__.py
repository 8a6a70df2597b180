"""
Approvals from Messenger: a Human-in-the-loop task's question asked by the shop's bot, answered by
a tap.

- :mod:`.tokens`: the signed token each button carries (plain Python);
- :mod:`.question`: the question as a Messenger message, within Messenger's limits (plain Python);
- :mod:`.answer`: the endpoint a tap calls, mounted by the plugin at ``/ahachat/approvals/answer``.

The operators are in :mod:`airflow_provider_ahachat.operators.hitl`, the notifier in
:mod:`airflow_provider_ahachat.notifications.hitl`, and the one call into Airflow's internal HITL
answer path in :mod:`airflow_provider_ahachat.plugins.hitl_answer`.
"""

from __future__ import annotations
