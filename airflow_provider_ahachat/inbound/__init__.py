"""
Inbound: what runs in Airflow's API server, for calls that come in from AhaChat and Messenger.

- the webhook receiver (``POST /ahachat/webhooks/<conn_id>/<event>``): a bot's JSON API block
  records an asset event, on which DAGs are scheduled. :mod:`.receiver`, with what it shares with
  the answer endpoint in :mod:`.intake` (reading a request safely) and :mod:`.keys` (the keys
  derived from a connection's secrets);
- the approvals (``/ahachat/approvals/answer``): a tap on a button of a Human-in-the-loop question
  answers the task. :mod:`.answer`, with the buttons' signed tokens in :mod:`.tokens` and the
  question as a Messenger message in :mod:`.question` (both also used by the notifier that asks);
- the plugins: :mod:`.plugin` mounts both at ``/ahachat`` with Airflow behind them;
  :mod:`.connection_test` mends the connection Test button of Airflow 3.3.0 to 3.3.2;
  :mod:`.access_log` keeps answer tokens out of Airflow 3.1's access log;
- :mod:`.airflow_internals`: every call into Airflow's internals, with the releases it was checked
  against, and the workarounds of Airflow's bugs, each naming the upstream fix it waits for.

Only :mod:`.airflow_internals` reaches into Airflow's internals; the plugins use Airflow's plugin
API, and the rest Airflow's public APIs through :mod:`airflow_provider_ahachat.version_compat` (its
configuration and secret masker). The receiver and the answer endpoint are plain FastAPI apps,
given the functions to call.
"""

from __future__ import annotations
