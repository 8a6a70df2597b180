"""
Tell people in Messenger what a DAG did: ``AhaChatNotifier`` for Airflow's callbacks.

Importing this module is light (no ``requests``, no ``httpx``, no client): DAG files import it.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseNotifier

from airflow_provider_ahachat.exceptions import (
    AhaChatError,
    AhaChatOutsideWindowError,
    AhaChatValidationError,
)
from airflow_provider_ahachat.hooks.ahachat import AhaChatHook
from airflow_provider_ahachat.models import MAX_TEXT, MessageTag, literal_message_tag

if TYPE_CHECKING:
    import jinja2
    from airflow.sdk import Context

    from airflow_provider_ahachat.client import AhaChatClient
    from airflow_provider_ahachat.request import ApiRequest

__all__ = ["AhaChatBaseNotifier", "AhaChatNotifier", "send_ahachat_notification"]

_ELLIPSIS = "…"


def _as_list(value: Any) -> list[Any]:
    if value is None or value == "":
        return []
    if isinstance(value, str | int):
        return [value]
    return list(value)


class AhaChatBaseNotifier(BaseNotifier):
    """
    Base of the AhaChat notifiers: the connection, its hook, and the tag of the broadcasts they start.

    :param ahachat_conn_id: the ``ahachat`` connection to use.
    :param message_tag: the message tag of a broadcast the notifier starts: none by default (or
        the connection's ``default_message_tag``); a tag Meta retired fails when the DAG is parsed.
    """

    def __init__(
        self,
        *,
        ahachat_conn_id: str = AhaChatHook.default_conn_name,
        message_tag: MessageTag | str | None = None,
        **kwargs: Any,
    ) -> None:
        tag = literal_message_tag(message_tag)  # a tag Meta retired fails here, when the DAG is parsed
        # ``context`` comes as a keyword argument when Airflow runs a notifier for a deadline alert.
        super().__init__(**kwargs)
        self.ahachat_conn_id = ahachat_conn_id
        self.message_tag = tag

    @cached_property
    def hook(self) -> AhaChatHook:
        """The hook for ``ahachat_conn_id``."""
        return AhaChatHook(ahachat_conn_id=self.ahachat_conn_id)


class AhaChatNotifier(AhaChatBaseNotifier):
    """
    Send a message to one or more people through an AhaChat bot when a DAG or a task fails,
    succeeds or retries, or a deadline is missed.

    Give either ``text`` (a text message) or ``block_name`` (a block started through the Broadcast
    API, with a message tag). Every text, attribute and recipient is a Jinja template, rendered
    with the callback's context: ``{{ dag.dag_id }}``, ``{{ ti.task_id }}``, ``{{ exception }}``,
    ``{{ run_id }}`` and so on.

    **The 24-hour rule.** Messenger lets a bot message people only within 24 hours of their last
    message or tap on one of its buttons, a text and a block alike: a team that wants its alerts
    keeps its window open, each person tapping a button of the bot (a block ending with a quick
    reply such as "Đã xem") when they read one. Someone outside the window is named in the log as
    such, with a link to the task in Airflow's UI.

    A failure to notify (wrong token, someone outside the 24-hour window, AhaChat down) is logged
    and never raised, so it never hides the failure being reported. A text longer than Messenger's
    2000 characters is cut to fit.

    .. code-block:: python

        from airflow_provider_ahachat.notifications.ahachat import send_ahachat_notification

        with DAG(
            "orders",
            on_failure_callback=send_ahachat_notification(
                user_ids=["3824547807572463"],
                text="DAG {{ dag.dag_id }} failed in {{ ti.task_id }}: {{ exception }}",
            ),
        ): ...

    :param user_ids: the messenger_user_id of each person, a string or a list (templated).
    :param phones: phone numbers of people to reach with ``block_name``; a text needs user IDs
        (templated).
    :param text: the text to send (templated). Give this or ``block_name``.
    :param block_name: the block to start for each person (templated). Give this or ``text``.
    :param message_tag: the message tag of the broadcast: none by default, a standard message
        (templated). Meta allows no tag for automated alerts since 27 April 2026; a tag Meta
        retired fails when the DAG is parsed.
    :param attributes: attributes saved on each person before the block runs, for the block to show
        (templated, values too).
    :param ahachat_conn_id: the ``ahachat`` connection to use (templated).
    """

    template_fields: Sequence[str] = (
        "user_ids",
        "phones",
        "text",
        "block_name",
        "message_tag",
        "attributes",
        "ahachat_conn_id",
    )

    def __init__(
        self,
        *,
        user_ids: str | Sequence[str] | None = None,
        phones: str | Sequence[str] | None = None,
        text: str | None = None,
        block_name: str | None = None,
        message_tag: MessageTag | str | None = None,
        attributes: dict[str, Any] | None = None,
        ahachat_conn_id: str = AhaChatHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(ahachat_conn_id=ahachat_conn_id, message_tag=message_tag, **kwargs)
        problems = []
        if (text is None) == (block_name is None):
            problems.append("text, block_name: give exactly one of them")
        if not _as_list(user_ids) and not _as_list(phones):
            problems.append("user_ids, phones: give at least one recipient")
        if text is not None and _as_list(phones):
            problems.append(
                "phones: a text can only be sent by user ID; use user_ids, or block_name to reach phones"
            )
        if attributes is not None and block_name is None:
            problems.append("attributes: only a block (block_name) takes attributes")
        if problems:
            raise AhaChatValidationError(problems)
        #: What each recipient gets, an action of the registry.
        self.action_name = "send_text" if text is not None else "broadcast_block"
        self.user_ids = user_ids
        self.phones = phones
        self.text = text
        self.block_name = block_name
        self.attributes = attributes

    def render_template_fields(self, context: Context, jinja_env: jinja2.Environment | None = None) -> None:
        """
        Render the templated arguments with ``context``.

        ``dag.test()`` runs DAG-level callbacks with the scheduler's copy of the DAG in the context,
        which cannot build a Jinja environment; the default environment renders them then. Where
        a context has no ``exception`` (``dag.test()`` on Airflow 3.1, success callbacks), it is
        None, so that one template serves every callback.
        """
        context.setdefault("exception", None)
        dag = context.get("dag")
        if jinja_env is None and dag is not None and not hasattr(dag, "get_template_env"):
            jinja_env = self.get_template_env()
        super().render_template_fields(context, jinja_env)

    # -- what to send, once the templates are rendered

    def _arguments(self) -> dict[str, Any]:
        """The action's arguments, rendered: the text, cut to fit; or the block, its tag and attributes."""
        if self.text is None:
            return {
                "block_name": self.block_name,
                "message_tag": self.message_tag,
                "attributes": self.attributes,
            }
        text = str(self.text)
        if len(text) > MAX_TEXT:
            text = text[: MAX_TEXT - len(_ELLIPSIS)] + _ELLIPSIS
        return {"text": text}

    def _requests(self, client: AhaChatClient) -> list[tuple[str, ApiRequest | None]]:
        """
        One request per recipient, the shared arguments validated once; a recipient whose input is
        invalid gets None (and is logged), every recipient does when the shared arguments are.
        """
        recipients = [("user_id", value) for value in _as_list(self.user_ids)]
        recipients += [("phone", value) for value in _as_list(self.phones)]
        named = [
            (f"{'user' if kind == 'user_id' else 'phone'} {value}", {kind: value})
            for kind, value in recipients
        ]
        try:
            bound = client.bind(self.action_name, self._arguments())
        except AhaChatValidationError as err:
            self.log.error("AhaChat: not notifying anyone: %s", err)
            return [(who, None) for who, _ in named]
        prepared: list[tuple[str, ApiRequest | None]] = []
        for who, recipient in named:
            try:
                prepared.append((who, client.address(bound, **recipient)))
            except AhaChatValidationError as err:
                self.log.error("AhaChat: not notifying %s: %s", who, err)
                prepared.append((who, None))
        return prepared

    def _report(self, sent: int, total: int, outside: list[str], context: Context) -> None:
        if outside:
            link = ui_link(context)
            self.log.warning(
                "AhaChat: %d of %d recipients are outside Messenger's 24-hour window (they last wrote "
                "or tapped a button of the bot more than 24 hours ago), so were not notified: %s%s",
                len(outside),
                total,
                ", ".join(outside),
                f". The run in Airflow's UI: {link}" if link else "",
            )
        if sent + len(outside) == total:
            self.log.info("AhaChat: notified %d of %d recipients", sent, total)
        else:
            self.log.error("AhaChat: notified %d of %d recipients; see the errors above", sent, total)

    # -- sending

    def notify(self, context: Context) -> None:
        """Send the notification to every recipient; log, never raise, what fails."""
        try:
            client = self.hook.client
        except Exception as err:
            self.log.error("AhaChat: could not notify anyone: %s: %s", type(err).__name__, err)
            return
        prepared = self._requests(client)
        sent, outside = 0, []
        for who, request in prepared:
            if request is None:
                continue
            try:
                client.perform(request)
            except AhaChatOutsideWindowError:
                outside.append(who)
                continue
            except AhaChatError as err:
                self.log.error("AhaChat: could not notify %s: %s", who, err)
                continue
            sent += 1
        self._report(sent, len(prepared), outside, context)

    async def async_notify(self, context: Context) -> None:
        """
        Send the notification from an event loop (deadline alerts run in the triggerer).

        The few requests go out from a worker thread through :meth:`notify`, so the loop never waits.
        """
        from asgiref.sync import sync_to_async

        await sync_to_async(self.notify)(context)


def ui_link(context: Any) -> str | None:
    """The task instance's page in Airflow's UI, from a callback's context, when it has one."""
    ti = context.get("ti") if hasattr(context, "get") else None
    try:
        link = getattr(ti, "log_url", None)
    except Exception:  # a context without a full task instance (a DAG-level callback, say)
        return None
    return link if isinstance(link, str) and link.startswith(("http://", "https://")) else None


#: The notifier under the name Airflow's other providers use for theirs (``send_slack_notification``).
send_ahachat_notification = AhaChatNotifier
