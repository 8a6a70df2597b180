"""
Ask a Human-in-the-loop task's question in Messenger: ``AhaChatHITLNotifier``.

Importing this module is light (no ``requests``, no client): DAG files import it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow_provider_ahachat.exceptions import (
    AhaChatError,
    AhaChatOutsideWindowError,
    AhaChatValidationError,
)
from airflow_provider_ahachat.hooks.ahachat import AhaChatHook
from airflow_provider_ahachat.models import MessageTag
from airflow_provider_ahachat.notifications.ahachat import AhaChatBaseNotifier
from airflow_provider_ahachat.version_compat import hitl_response_timeout

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_ahachat.inbound.tokens import Question

__all__ = ["APPROVER_PREFIX", "DEFAULT_QUESTION_TAG", "MAX_TOKEN_LIFETIME", "AhaChatHITLNotifier"]

#: An approver's Airflow user ID is this and their ``messenger_user_id``.
APPROVER_PREFIX = "ahachat:"
#: How long a button works when the task has no ``response_timeout``.
MAX_TOKEN_LIFETIME = timedelta(days=7)
#: The tag of the broadcast of ``question_block``: none (or the connection's ``default_message_tag``).
#: Meta allows no tag for an automated question since 27 April 2026 (``ACCOUNT_UPDATE``, which this
#: was, is retired), so the question reaches approvers inside the 24-hour window only.
DEFAULT_QUESTION_TAG: MessageTag | None = None
#: Where the buttons point, under ``[api] base_url``.
ANSWER_PATH = "/ahachat/approvals/answer"
#: The attributes a question block (``question_block``) reads: the question, then per option its
#: title and URL (1 to 3), and the link to Airflow's "Required actions" page.
QUESTION_ATTRIBUTES = (
    "airflow_hitl_text",
    "airflow_hitl_title_N",
    "airflow_hitl_url_N",
    "airflow_hitl_ui_url",
)


def _as_list(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str | int):
        return [str(value)]
    return [str(item) for item in value]


def approvers_of(assigned_users: Any) -> list[str]:
    """The ``messenger_user_id`` of each assigned user whose ID is ``ahachat:<id>``."""
    ids = [str(user.get("id", "")) for user in assigned_users or [] if isinstance(user, dict)]
    return [i[len(APPROVER_PREFIX) :] for i in ids if i.startswith(APPROVER_PREFIX)]


class AhaChatHITLNotifier(AhaChatBaseNotifier):
    """
    Send a Human-in-the-loop task's question to its approvers in Messenger, with one button per
    option; a tap answers the task as the Airflow user ``ahachat:<messenger_user_id>``.

    Use it on Airflow's own ``HITLOperator``, ``ApprovalOperator`` or ``HITLBranchOperator``
    through ``notifiers=[...]``; :class:`~airflow_provider_ahachat.operators.hitl.AhaChatApprovalOperator`
    and its siblings add it for you. Each approver must be among the task's ``assigned_users`` as
    ``{"id": "ahachat:<messenger_user_id>", "name": ...}``.

    Each button carries a token signed with a key derived from the connection's ``approval_secret``
    (or its ``webhook_secret``) and the question's random nonce, bound to the task instance, its
    try, the option and the approver, which stops working at the task's response deadline. The
    nonce, the try, the connection and the deadline are recorded in the XCom
    ``ahachat_question.<conn_id>`` of the task instance, which the API server reads to check a tap.

    The question goes as a message, which Messenger delivers to approvers who wrote to the bot or
    tapped one of its buttons in the last 24 hours (every tap on a button is an interaction: an
    approver who answers keeps their window open). An approver outside the window is named in the
    task log with the link to answer in Airflow's UI, where the task stays answerable. With a
    ``message_tag`` the page may use (one its connection's ``message_tags`` allows) and a
    ``question_block``, such an approver gets that block instead, with the attributes
    ``airflow_hitl_text``, ``airflow_hitl_title_1..3``, ``airflow_hitl_url_1..3`` and
    ``airflow_hitl_ui_url``. If no approver can be asked for any other reason (a wrong token,
    AhaChat down), the notifier raises, so the task fails (and retries) rather than wait for an
    answer nobody was asked for.

    :param approvers: ``messenger_user_id`` of each person to ask, a string or a list (templated);
        by default, every assigned user whose ID starts with ``ahachat:``.
    :param ahachat_conn_id: the ``ahachat`` connection (templated).
    :param option_labels: option to button title (20 characters at most); ``Approve`` and
        ``Reject`` read "Đồng ý" and "Từ chối" unless given.
    :param question_block: the block to broadcast, with ``message_tag``, to an approver outside the
        24-hour window; None (the default) leaves such approvers to Airflow's UI.
    :param message_tag: the tag of that broadcast: none by default (or the connection's
        ``default_message_tag``), and then the block is not tried, since Messenger would refuse it
        alike. A tag Meta retired fails when the DAG is parsed.
    """

    template_fields: Sequence[str] = ("approvers", "ahachat_conn_id", "question_block")

    def __init__(
        self,
        *,
        approvers: str | Sequence[str] | None = None,
        ahachat_conn_id: str = AhaChatHook.default_conn_name,
        option_labels: dict[str, str] | None = None,
        question_block: str | None = None,
        message_tag: MessageTag | str | None = DEFAULT_QUESTION_TAG,
        **kwargs: Any,
    ) -> None:
        super().__init__(ahachat_conn_id=ahachat_conn_id, message_tag=message_tag, **kwargs)
        self.approvers = approvers
        self.option_labels = dict(option_labels or {})
        self.question_block = question_block

    def notify(self, context: Context) -> None:
        """Ask every approver; raise if none could be asked."""
        from airflow_provider_ahachat.inbound.question import labels_for, question_message
        from airflow_provider_ahachat.inbound.tokens import secret_from_extra
        from airflow_provider_ahachat.version_compat import conf

        task: Any = context["task"]
        ti: Any = context["ti"]
        assigned = approvers_of(getattr(task, "assigned_users", None))
        approvers = _as_list(self.approvers) or assigned
        base_url = str(conf().get("api", "base_url", fallback="") or "").rstrip("/")
        secret = secret_from_extra(self.hook.connection.extra_dejson)
        problems = self._problems(approvers, assigned, base_url, secret)
        options = labels_for(list(task.options), self.option_labels)
        if problems:
            raise AhaChatValidationError(problems)
        assert secret is not None

        question = _record_question(ti, self.ahachat_conn_id, int(_deadline(task).timestamp()))
        ui_url = _ui_url(context, base_url)
        client = self.hook.client
        asked: list[str] = []
        outside: list[str] = []
        for approver in approvers:
            message = question_message(
                str(task.subject),
                None if task.body is None else str(task.body),
                options,
                answer_url=_answer_urls(ti, self.ahachat_conn_id, approver, question, base_url, secret),
                ui_url=ui_url,
                multiple=bool(task.multiple),
            )
            outcome = self._ask_one(client, approver, message, ui_url)
            if outcome == "asked":
                asked.append(approver)
            elif outcome == "outside":
                outside.append(approver)
        self._report(approvers, asked, outside, ui_url)

    def _problems(
        self, approvers: list[str], assigned: list[str], base_url: str, secret: str | None
    ) -> list[str]:
        """What stops the question from being asked at all, each naming its setting."""
        problems = []
        if not approvers:
            problems.append("approvers: give at least one messenger_user_id")
        for approver in approvers:
            if approver not in assigned:
                problems.append(
                    f"approvers: {approver} is not among the task's assigned_users; add"
                    f" {{'id': '{APPROVER_PREFIX}{approver}', 'name': ...}} to them"
                )
        if not base_url.startswith(("http://", "https://")):
            problems.append("[api] base_url: must be the API server's http(s) URL, reachable by AhaChat")
        if secret is None:
            problems.append(
                f"connection {self.ahachat_conn_id!r}: set the extra field approval_secret (or"
                " webhook_secret) to sign the buttons"
            )
        return problems

    def _ask_one(self, client: Any, approver: str, message: dict[str, Any], ui_url: str | None) -> str:
        """Ask one approver and log how it went: ``asked``, ``outside`` (the window) or ``failed``."""
        try:
            self._ask(client, approver, message, ui_url)
        except AhaChatOutsideWindowError as err:
            self.log.warning(
                "AhaChat: approver %s is outside Messenger's 24-hour window, so was not asked in "
                "Messenger (%s). They can answer in Airflow's UI: %s",
                approver,
                err.api_message or err.message,
                ui_url or "the task's Required actions page",
            )
            return "outside"
        except AhaChatError as err:
            self.log.error("AhaChat: could not ask approver %s: %s", approver, err)
            return "failed"
        return "asked"

    def _ask(self, client: Any, approver: str, message: dict[str, Any], ui_url: str | None) -> None:
        """
        Ask one approver: the question as a message; outside the window, ``question_block`` with a
        tag the page may use, if there are both.

        :raises AhaChatOutsideWindowError: when Messenger refuses to message them now.
        """
        try:
            client.run("send_message", {"message": message}, user_id=approver)
        except AhaChatOutsideWindowError:
            tag = client.message_tag_rule.check(self.message_tag)
            if not self.question_block or tag is None:
                raise  # a block without a tag is refused alike: not tried
            arguments = {
                "block_name": self.question_block,
                "message_tag": tag,
                "attributes": _block_attributes(message, ui_url),
            }
            client.run("broadcast_block", arguments, user_id=approver)

    def _report(self, approvers: list[str], asked: list[str], outside: list[str], ui_url: str | None) -> None:
        """Log who was asked; raise when nobody was, for a reason other than Messenger's window."""
        if asked:
            self.log.info(
                "AhaChat: asked %d of %d approvers: %s", len(asked), len(approvers), ", ".join(asked)
            )
        elif outside:
            # The task stays answerable in Airflow's UI: waiting there is better than failing it.
            self.log.warning(
                "AhaChat: no approver could be asked in Messenger (%s outside the 24-hour window); the "
                "task waits for an answer in Airflow's UI: %s",
                ", ".join(outside),
                ui_url or "the task's Required actions page",
            )
        else:
            raise AhaChatError(
                f"AhaChat: the question reached none of the approvers ({', '.join(approvers)});"
                " see the errors above"
            )


#: The questions asked in this process, by task instance, try and connection: a second notifier of
#: the same try and connection reuses the first one's record, so that its buttons keep working.
_ASKED: dict[tuple[str, str, str, int, int, str], Question] = {}


def _answer_urls(
    ti: Any, conn_id: str, approver: str, question: Question, base_url: str, secret: str
) -> Callable[[str, str], str]:
    """The URL each button of ``approver``'s question calls: a token signed for that option."""
    from airflow_provider_ahachat.inbound.tokens import AnswerToken, sign

    def answer_url(option: str, label: str) -> str:
        token = AnswerToken(
            conn_id=conn_id,
            dag_id=ti.dag_id,
            run_id=ti.run_id,
            task_id=ti.task_id,
            map_index=ti.map_index if ti.map_index is not None else -1,
            try_number=ti.try_number,
            approver=approver,
            option=option,
            label=label,
            expires=question.expires,
        )
        return (
            f"{base_url}{ANSWER_PATH}?t={quote(sign(token, secret, question.nonce), safe='.')}"
            "&messenger_user_id={{messenger_user_id}}"
        )

    return answer_url


def _record_question(ti: Any, conn_id: str, expires: int) -> Question:
    """
    The question this try asks through ``conn_id``, recorded as an XCom of the task instance (where
    the API server reads it and a tap cannot write it).
    """
    from airflow_provider_ahachat.inbound.tokens import Question

    map_index = ti.map_index if ti.map_index is not None else -1
    asked = (ti.dag_id, ti.run_id, ti.task_id, map_index, ti.try_number, conn_id)
    if asked not in _ASKED:
        question = Question.new(conn_id, ti.try_number, expires)
        ti.xcom_push(key=question.xcom_key, value=question.to_json())
        _ASKED[asked] = question
    return _ASKED[asked]


def _deadline(task: Any) -> datetime:
    """When the buttons stop working: the response deadline, or :data:`MAX_TOKEN_LIFETIME` from now."""
    now = datetime.now(timezone.utc)
    extra = getattr(task, "hitl_summary_extra", None) or {}
    text = extra.get("timeout_datetime")
    if text:
        return datetime.fromisoformat(str(text))
    timeout = hitl_response_timeout(task)
    if timeout:
        return now + timeout
    return now + MAX_TOKEN_LIFETIME


def _ui_url(context: Any, base_url: str) -> str | None:
    from airflow.providers.standard.operators.hitl import HITLOperator

    try:
        return HITLOperator.generate_link_to_ui_from_context(context=context, base_url=base_url)
    except Exception:  # not an HITLOperator, or an Airflow without the helper
        return None


def _block_attributes(message: dict[str, Any], ui_url: str | None) -> dict[str, str]:
    """The question as attributes, for a block that shows it outside the 24-hour window."""
    first = message["messages"][0]
    payload = first.get("attachment", {}).get("payload", {})
    buttons = payload.get("buttons") or first.get("quick_replies") or []
    attributes = {"airflow_hitl_text": str(payload.get("text") or first.get("text") or "")}
    for i, button in enumerate(b for b in buttons if b.get("type") == "json_plugin_url"):
        if i >= 3:
            break
        attributes[f"airflow_hitl_title_{i + 1}"] = str(button["title"])
        attributes[f"airflow_hitl_url_{i + 1}"] = str(button["url"])
    if ui_url:
        attributes["airflow_hitl_ui_url"] = ui_url
    return attributes
