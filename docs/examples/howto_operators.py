"""
The how-to "A broadcast and the other actions": one customer, every operator.

The docs include the part between the markers. ``tests/unit/test_docs_examples.py`` runs this DAG with
``dag.test()`` against the sandbox, as the connection ``ahachat_default``, and checks what Lan and
Minh received.
"""

from __future__ import annotations

# [START howto_operators]
import pendulum
from airflow.sdk import DAG

from airflow_provider_ahachat.operators.ahachat import (
    AddAttributesOperator,
    AddTagsOperator,
    BroadcastBlockOperator,
    FindUserOperator,
    RemoveTagsOperator,
    ResetAttributesOperator,
    SendDynamicMessageOperator,
    SendTextMessageOperator,
)

with DAG("howto_operators", schedule=None, start_date=pendulum.datetime(2026, 1, 1)) as dag:
    # Find a customer by phone (spaces, dots and dashes are ignored) or by user_id, exactly one.
    # not_found="skip" skips the task for a customer AhaChat does not know (branch on "not a
    # customer yet"); the default fails it. A phone several customers share fails it, saying how many.
    find = FindUserOperator(task_id="find", phone="0908 071 111")
    user_id = find.output["messenger_user_id"]  # also pushed under this XCom key

    tag = AddTagsOperator(task_id="tag", user_id=user_id, tags=["vip", "da_mua_hang"])
    untag = RemoveTagsOperator(task_id="untag", user_id=user_id, tags="cho_giao_hang")

    # Attributes: a dict or a JSON object string; values as in "Attribute names and values" below.
    attrs = AddAttributesOperator(
        task_id="attrs", user_id=user_id, attributes={"codeso": 99999, "s_d_t": "0908071111"}
    )
    # The names of the attributes to clear; attributes= (AhaMake's name for the field) works too.
    reset = ResetAttributesOperator(task_id="reset", user_id=user_id, names=["codeso"])

    # Messages reach only customers who wrote to the bot (or tapped its buttons) in the last 24
    # hours; for the others the task fails without retries, or skips with outside_window="skip".
    text = SendTextMessageOperator(
        task_id="text", user_id=user_id, text="Chào {{ ti.xcom_pull('find')['first_name'] }}!"
    )
    buttons = SendDynamicMessageOperator(
        task_id="buttons",
        user_id=user_id,
        message={  # also a list of messages, or either as a JSON string
            "messages": [
                {"attachment": {"type": "image", "payload": {"url": "https://example.com/a.png"}}},
                {"text": "Chọn size:", "quick_replies": [{"title": "M", "block_name": "size_m"}]},
            ],
            "set_attributes": {"size_asked": "yes"},
        },
    )

    # The Broadcast API: start a block, by user_id or phone. No message tag by default: a standard
    # message, for customers inside the 24-hour window. Attributes are saved before the block runs.
    shipped = BroadcastBlockOperator(
        task_id="shipped",
        phone="+84 912 345 678",
        block_name="shipping_update",
        attributes={"order_id": "DH10232", "tracking_number": "GHN8123457VN"},
    )

    find >> [tag, untag, attrs] >> reset >> text >> buttons
# [END howto_operators]
