"""
One operator per AhaChat action.

Operators are thin: they hold templated arguments, let the client validate them once Jinja has
rendered them (so bad input fails before any request is sent), send one request through the hook,
and return JSON for XCom.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseOperator

from airflow_provider_ahachat.hooks.ahachat import AhaChatHook
from airflow_provider_ahachat.models import DEFAULT_MESSAGE_TAG, MessageTag

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_ahachat.client import AhaChatClient, ApiRequest

__all__ = [
    "AddAttributesOperator",
    "AddTagsOperator",
    "AhaChatBaseOperator",
    "BroadcastBlockOperator",
    "FindUserOperator",
    "RemoveTagsOperator",
    "ResetAttributesOperator",
    "SendDynamicMessageOperator",
    "SendTextMessageOperator",
]


class AhaChatBaseOperator(BaseOperator):
    """
    Base of the AhaChat operators: owns the hook and the validate-then-send flow.

    :param ahachat_conn_id: the ``ahachat`` connection to use.
    :param retry_unknown_outcome: retry a message whose outcome is unknown (read timeout, 500), at
        the risk of sending it twice. Off by default.
    """

    ui_color = "#f4c20d"

    def __init__(
        self,
        *,
        ahachat_conn_id: str = AhaChatHook.default_conn_name,
        retry_unknown_outcome: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.ahachat_conn_id = ahachat_conn_id
        self.retry_unknown_outcome = retry_unknown_outcome

    @cached_property
    def hook(self) -> AhaChatHook:
        """The hook for ``ahachat_conn_id``."""
        return AhaChatHook(
            ahachat_conn_id=self.ahachat_conn_id, retry_unknown_outcome=self.retry_unknown_outcome
        )

    def prepare(self, client: AhaChatClient) -> ApiRequest:
        """Validate the rendered arguments and build the request; send nothing."""
        raise NotImplementedError

    def execute(self, context: Context) -> Any:
        client = self.hook.client
        request = self.prepare(client)
        who = request.recipient.describe() if request.recipient else f"bot {client.bot_id}"
        self.log.info("AhaChat: %s for %s", request.action.replace("_", " "), who)
        return client.perform(request).model_dump(mode="json")


class FindUserOperator(AhaChatBaseOperator):
    """
    Find a user by ``user_id`` or by ``phone`` (exactly one); return everything about them.

    The XCom value is the user: ``messenger_user_id``, names, ``phone``, ``tags``, ``attributes``,
    ``last_interaction_at`` and ``subscribed``. The ID is also pushed under the XCom key
    ``messenger_user_id``, so ``find.output["messenger_user_id"]`` feeds it to the next operator.
    A user that does not exist fails the task (``AhaChatNotFoundError``).

    :param user_id: the messenger_user_id, as a string (templated).
    :param phone: the phone number; spaces, dots and dashes are ignored (templated).
    :param ahachat_conn_id: the ``ahachat`` connection to use.
    """

    template_fields: Sequence[str] = ("user_id", "phone")

    def __init__(self, *, user_id: str | None = None, phone: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.user_id = user_id
        self.phone = phone

    def prepare(self, client: AhaChatClient) -> ApiRequest:
        return client.prepare_find_user(user_id=self.user_id, phone=self.phone)

    def execute(self, context: Context) -> dict[str, Any]:
        client = self.hook.client
        user = client.fetch_user(self.prepare(client))
        context["ti"].xcom_push(key="messenger_user_id", value=user.messenger_user_id)
        self.log.info("AhaChat: found user %s (%s)", user.messenger_user_id, user.first_name or "no name")
        return user.model_dump(mode="json")


class AddTagsOperator(AhaChatBaseOperator):
    """
    Add one or more tags to a user.

    :param user_id: the messenger_user_id, as a string (templated).
    :param tags: a tag or a list of tags, each non-empty (templated).
    :param ahachat_conn_id: the ``ahachat`` connection to use.
    """

    template_fields: Sequence[str] = ("user_id", "tags")

    def __init__(self, *, user_id: str, tags: str | list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.user_id = user_id
        self.tags = tags

    def prepare(self, client: AhaChatClient) -> ApiRequest:
        return client.prepare_add_tags(self.user_id, self.tags)


class RemoveTagsOperator(AddTagsOperator):
    """
    Remove one or more tags from a user.

    :param user_id: the messenger_user_id, as a string (templated).
    :param tags: a tag or a list of tags, each non-empty (templated).
    :param ahachat_conn_id: the ``ahachat`` connection to use.
    """

    def prepare(self, client: AhaChatClient) -> ApiRequest:
        return client.prepare_remove_tags(self.user_id, self.tags)


class AddAttributesOperator(AhaChatBaseOperator):
    """
    Set attributes on a user, e.g. ``{"codeso": 99999, "s_d_t": "0908071111"}``.

    :param user_id: the messenger_user_id, as a string (templated).
    :param attributes: a dict, or a JSON object string, of name to string, number or boolean
        (templated). Names reserved by the Broadcast API (``phone``, ``ahachat_*``) are refused.
    :param ahachat_conn_id: the ``ahachat`` connection to use.
    """

    template_fields: Sequence[str] = ("user_id", "attributes")
    template_fields_renderers: ClassVar[dict[str, str]] = {"attributes": "json"}

    def __init__(self, *, user_id: str, attributes: dict[str, Any] | str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.user_id = user_id
        self.attributes = attributes

    def prepare(self, client: AhaChatClient) -> ApiRequest:
        return client.prepare_add_attributes(self.user_id, self.attributes)


class ResetAttributesOperator(AhaChatBaseOperator):
    """
    Clear one or more attributes from a user.

    :param user_id: the messenger_user_id, as a string (templated).
    :param attributes: an attribute name or a list of them (templated).
    :param ahachat_conn_id: the ``ahachat`` connection to use.
    """

    template_fields: Sequence[str] = ("user_id", "attributes")

    def __init__(self, *, user_id: str, attributes: str | list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.user_id = user_id
        self.attributes = attributes

    def prepare(self, client: AhaChatClient) -> ApiRequest:
        return client.prepare_reset_attributes(self.user_id, self.attributes)


class SendTextMessageOperator(AhaChatBaseOperator):
    """
    Send a text message (at most 2000 characters) to a user.

    Messenger lets a bot message a user freely only within 24 hours of the user's last message;
    outside that window AhaChat refuses (``AhaChatOutsideWindowError``): use
    :class:`BroadcastBlockOperator` with a message tag instead.

    :param user_id: the messenger_user_id, as a string (templated).
    :param text: the text (templated).
    :param ahachat_conn_id: the ``ahachat`` connection to use.
    :param retry_unknown_outcome: resend when the outcome is unknown, at the risk of a duplicate.
    """

    template_fields: Sequence[str] = ("user_id", "text")

    def __init__(self, *, user_id: str, text: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.user_id = user_id
        self.text = text

    def prepare(self, client: AhaChatClient) -> ApiRequest:
        return client.prepare_send_text(self.user_id, self.text)


class SendDynamicMessageOperator(AhaChatBaseOperator):
    """
    Send a dynamic message in AhaChat's JSON API format: images, video, audio, files, galleries,
    receipts, buttons and quick replies. The same 24-hour rule as text applies.

    :param user_id: the messenger_user_id, as a string (templated).
    :param message: the whole object (``{"messages": [...], "set_attributes": ..., "redirect_to_blocks":
        ...}``), a list of messages, or either as a JSON string (templated). It is checked against
        Messenger's limits before sending.
    :param ahachat_conn_id: the ``ahachat`` connection to use.
    :param retry_unknown_outcome: resend when the outcome is unknown, at the risk of a duplicate.
    """

    template_fields: Sequence[str] = ("user_id", "message")
    template_fields_renderers: ClassVar[dict[str, str]] = {"message": "json"}

    def __init__(self, *, user_id: str, message: dict[str, Any] | list[Any] | str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.user_id = user_id
        self.message = message

    def prepare(self, client: AhaChatClient) -> ApiRequest:
        return client.prepare_send_message(self.user_id, self.message)


class BroadcastBlockOperator(AhaChatBaseOperator):
    """
    Start a chatbot block for a user through AhaChat's Broadcast API.

    With a message tag the block reaches the user even outside the 24-hour window. ``attributes``
    are saved on the user before the block runs, so the block can show them (``{{order_id}}``).

    :param block_name: the block to start (templated).
    :param user_id: the messenger_user_id, as a string; give this or ``phone`` (templated).
    :param phone: the phone number; give this or ``user_id`` (templated).
    :param message_tag: one of ``CONFIRMED_EVENT_UPDATE``, ``POST_PURCHASE_UPDATE``,
        ``ACCOUNT_UPDATE``, ``NON_PROMOTIONAL_SUBSCRIPTION`` (the default) (templated).
    :param attributes: a dict, or a JSON object string, of attributes to save first (templated).
    :param ahachat_conn_id: the ``ahachat`` connection to use.
    :param retry_unknown_outcome: resend when the outcome is unknown, at the risk of a duplicate.
    """

    template_fields: Sequence[str] = ("block_name", "user_id", "phone", "message_tag", "attributes")
    template_fields_renderers: ClassVar[dict[str, str]] = {"attributes": "json"}

    def __init__(
        self,
        *,
        block_name: str,
        user_id: str | None = None,
        phone: str | None = None,
        message_tag: MessageTag | str = DEFAULT_MESSAGE_TAG,
        attributes: dict[str, Any] | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.block_name = block_name
        self.user_id = user_id
        self.phone = phone
        self.message_tag = message_tag.value if isinstance(message_tag, MessageTag) else message_tag
        self.attributes = attributes

    def prepare(self, client: AhaChatClient) -> ApiRequest:
        return client.prepare_broadcast_block(
            self.block_name,
            user_id=self.user_id,
            phone=self.phone,
            message_tag=self.message_tag,
            attributes=self.attributes,
        )
