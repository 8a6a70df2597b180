"""
What the tests of Messenger's 24-hour window share: the operators that message customers, run for
one customer outside the window or for many with a third of them outside it.

- :data:`BAO`, :data:`SINGLE_SENDS`: a seeded customer outside the window, and each single send to him.
- :data:`MANY_SENDS`, :func:`many_operator`: each kind of run for many, and its operator.
- :func:`third_outside`, :class:`ThirdOutside`: 12 customers, every third outside the window (the
  ``third`` fixture of ``helpers.fixtures`` makes them for each kind of run for many).

Importing this module does not import Airflow: ``helpers.fixtures``, loaded for every test, imports it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from airflow_provider_ahachat.sandbox import SandboxServer
from helpers.dag_helpers import CONN, SHOP, shop_db

#: A customer of the sandbox's seed who last wrote 3 days ago: outside the 24-hour window.
BAO = "5310298476123984"

#: Each single send to :data:`BAO` (by user ID, or by his phone): the operator's name and arguments.
SINGLE_SENDS: dict[str, dict[str, Any]] = {
    "text": {"operator": "SendTextMessageOperator", "text": "Đơn hàng của bạn đã được giao.", "user_id": BAO},
    "dynamic": {"operator": "SendDynamicMessageOperator", "message": [{"text": "Chào Bảo"}], "user_id": BAO},
    "broadcast_by_user": {"operator": "BroadcastBlockOperator", "block_name": "welcome", "user_id": BAO},
    "broadcast_by_phone": {
        "operator": "BroadcastBlockOperator",
        "block_name": "welcome",
        "phone": "0903 456 789",
    },
}

#: The kinds of run for many :func:`many_operator` builds.
MANY_SENDS = ["broadcast", "text", "dynamic", "sql_transfer"]


def many_operator(kind: str, audience: list[dict[str, Any]], ledger: str, **kwargs: Any) -> Any:
    """An operator that messages ``audience`` (each row's ``user_id`` or ``phone``) the ``kind`` way."""
    # Imported here: the operators import Airflow, which tests that never run a DAG do without.
    from airflow_provider_ahachat.operators.ahachat import (
        BroadcastBlockOperator,
        SendDynamicMessageOperator,
        SendTextMessageOperator,
    )
    from airflow_provider_ahachat.transfers.sql_to_ahachat import SqlToAhaChatOperator

    common = {"task_id": "send", "ledger_path": ledger, "rate_limit": 0, **kwargs}
    if kind == "broadcast":
        return BroadcastBlockOperator(block_name="shipping_update", recipients=audience, **common)
    if kind == "text":
        ids = [row["user_id"] for row in audience]
        return SendTextMessageOperator(text="Đơn hàng đã giao.", recipients=ids, **common)
    if kind == "dynamic":
        ids = [row["user_id"] for row in audience]
        return SendDynamicMessageOperator(message=[{"text": "Chào bạn!"}], recipients=ids, **common)
    return SqlToAhaChatOperator(
        sql="SELECT user_id, phone, ma_don AS order_id FROM orders ORDER BY rowid",
        sql_conn_id=SHOP,
        action="broadcast_block",
        block_name="shipping_update",
        **common,
    )


def third_outside(
    sandbox: SandboxServer, tmp_path: Path, kind: str
) -> tuple[list[str], list[str], list[str], list[dict[str, Any]], dict[str, str]]:
    """
    12 customers, every third outside the window: those inside, those outside, everyone in order,
    the audience (every other broadcast by phone: the window is checked the same way) and the
    connections (with the shop's database for the SQL transfer).
    """
    inside = sandbox.generate_users(8)
    outside = sandbox.generate_users(4, start=100, in_window=False)
    people = [uid for pair in zip(inside[::2], inside[1::2], outside, strict=True) for uid in pair]
    audience = [
        {"user_id": uid} if n % 2 or kind != "broadcast" else {"phone": sandbox.user(uid)["phone"]}
        for n, uid in enumerate(people)
    ]
    conns = {CONN: sandbox.connection_uri}
    if kind == "sql_transfer":
        db = shop_db(
            tmp_path / "shop.db", [(uid, None, f"DH{n}", "", "", "", 0) for n, uid in enumerate(people)]
        )
        conns[SHOP] = f"sqlite://{db}"
    return inside, outside, people, audience, conns


class ThirdOutside(NamedTuple):
    """What :func:`third_outside` makes, with the kind of run of many it was made for."""

    kind: str
    inside: list[str]
    outside: list[str]
    people: list[str]
    audience: list[dict[str, Any]]
    conns: dict[str, str]
