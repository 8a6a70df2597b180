"""
One operator per AhaChat action.

Operators are thin: each names its action of the registry (:mod:`airflow_provider_ahachat.registry`)
and takes that action's arguments, whose template fields come from the registry. The client
validates them once Jinja has rendered them (so bad input fails before any request is sent), the
hook's client sends, and the XCom is JSON; with ``recipients`` the run goes to the bulk engine.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NoReturn

from airflow.sdk import BaseOperator

from airflow_provider_ahachat.bulk_options import BulkOptions
from airflow_provider_ahachat.exceptions import (
    AhaChatError,
    AhaChatMessageTagRefusedError,
    AhaChatOutsideWindowError,
    AhaChatValidationError,
)
from airflow_provider_ahachat.hooks.ahachat import AhaChatHook
from airflow_provider_ahachat.models import (
    OUTSIDE_WINDOW_BULK_DEFAULT,
    OUTSIDE_WINDOW_SINGLE_DEFAULT,
    TEMPLATE_MARKERS,
    MessageTag,
    attribute_name_problem,
    literal_message_tag,
    validate_outside_window,
    validate_user_id,
)
from airflow_provider_ahachat.registry import ACTIONS

if TYPE_CHECKING:
    import jinja2
    from airflow.sdk import Context

    from airflow_provider_ahachat.bulk import BulkRunner, Columns
    from airflow_provider_ahachat.client import AhaChatClient
    from airflow_provider_ahachat.held.delivery import Holder
    from airflow_provider_ahachat.models import SendResult
    from airflow_provider_ahachat.request import ApiRequest


__all__ = [
    "AddAttributesOperator",
    "AddTagsOperator",
    "AhaChatApiOperator",
    "AhaChatAudienceOperator",
    "AhaChatBaseOperator",
    "BroadcastBlockOperator",
    "FindUserOperator",
    "RemoveTagsOperator",
    "ResetAttributesOperator",
    "SendDynamicMessageOperator",
    "SendTextMessageOperator",
]


_QUERY_WORDS = {"ahachat_block_name": "block", "ahachat_message_tag": "tag"}


def describe_request(request: ApiRequest) -> str:
    """What a request carries, in a few words for the log: block and tag, tags, attributes, messages."""
    parts = [f"{_QUERY_WORDS[name]} {value}" for name, value in request.params if name in _QUERY_WORDS]
    attributes = [name for name, _ in request.params if name not in _QUERY_WORDS and name != "phone"]
    body = request.json if isinstance(request.json, dict) else {}
    given = body.get("attributes")
    if isinstance(given, dict):
        attributes += list(given)
    if attributes:
        parts.append(f"attributes {', '.join(attributes)}")
    if isinstance(given, list):
        parts.append(f"clear {', '.join(map(str, given))}")
    if isinstance(body.get("tags"), list):
        parts.append(f"tags {', '.join(map(str, body['tags']))}")
    if isinstance(body.get("messages"), list):
        texts = [str(m["text"]) for m in body["messages"] if isinstance(m, dict) and m.get("text")]
        characters = f", {sum(map(len, texts))} characters of text" if texts else ""
        parts.append(f"{len(body['messages'])} message(s){characters}")
    return "; ".join(parts) or "no arguments"


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

    def render_template(
        self,
        content: Any,
        context: Context,
        jinja_env: jinja2.Environment | None = None,
        seen_oids: set[int] | None = None,
    ) -> Any:
        """
        Render ``content`` as Airflow does, but hand back strings without Jinja syntax untouched.

        Airflow compiles every string of a templated list as a Jinja template, about a millisecond
        each: 40 seconds for a literal list of 40,000 recipients. A string with no ``{{``, ``{%`` or
        ``{#`` renders to itself, so it is skipped.
        """
        if (
            isinstance(content, str)
            and not any(marker in content for marker in TEMPLATE_MARKERS)
            and not content.endswith(tuple(self.template_ext))
        ):
            return content
        return super().render_template(content, context, jinja_env, seen_oids)

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
        request = self.prepare(client)  # bad input fails here, before anything is sent
        who = request.recipient.describe() if request.recipient else f"bot {client.bot_id}"
        what = f"{request.describe()} for {who}"
        started = time.monotonic()
        try:
            result: SendResult = client.perform(request)
        except Exception:
            self.log.warning("AhaChat: %s failed after %.0f ms", what, 1000 * (time.monotonic() - started))
            raise
        self.log.info(
            "AhaChat: %s (%s): accepted in %.0f ms; AhaChat answered %s",
            what,
            describe_request(request),
            1000 * (time.monotonic() - started),
            client.bounded(json.dumps(result.data, ensure_ascii=False, default=str), 300),
        )
        return result.model_dump(mode="json")


_WITHOUT_RETRIES: dict[type[AhaChatError], type[AhaChatError]] = {}


def check_outside_window(action: str, outside_window: Any, hold_for: Any) -> None:
    """
    ``outside_window`` and ``hold_for`` for ``action``, checked when the DAG is parsed.

    :raises AhaChatValidationError: naming each field and its rule.
    """
    from airflow_provider_ahachat.held import validate_hold_for
    from airflow_provider_ahachat.held.messages import KINDS

    problems: list[str] = []
    for check in (
        lambda: validate_outside_window(outside_window),
        lambda: hold_for is None or validate_hold_for(hold_for),
    ):
        try:
            check()
        except AhaChatValidationError as err:
            problems += err.problems
    if outside_window is not None and action and not ACTIONS[action].sends_message:
        problems.append(f"outside_window: the action {action!r} messages nobody; leave it out")
    elif outside_window == "hold" and action and action not in KINDS:
        problems.append(f"outside_window: 'hold' holds only messages ({', '.join(KINDS)}), not {action!r}")
    if hold_for is not None and outside_window != "hold":
        problems.append(f'hold_for: only with outside_window="hold", got outside_window={outside_window!r}')
    if problems:
        raise AhaChatValidationError(problems)


def without_retries(error: AhaChatError) -> AhaChatError:
    """
    ``error``, as an error of its own class that is also Airflow's ``AirflowFailException``: the
    task fails without Airflow's retries. For refusals a retry would only meet again (a customer
    outside Messenger's window opens it only by writing; a refused tag stays refused).
    """
    from airflow_provider_ahachat.version_compat import fail_exception

    if isinstance(error, fail_exception()):
        return error
    cls = type(error)
    final = _WITHOUT_RETRIES.get(cls)
    if final is None:
        # Named as its base in tracebacks; pickled through its base (``__reduce__``), not by name.
        names = {"__module__": cls.__module__, "__qualname__": cls.__qualname__}
        final = type(cls.__name__, (cls, fail_exception()), {**names, "__reduce__": _reduce_without_retries})
        _WITHOUT_RETRIES[cls] = final
    copy = final.__new__(final)
    Exception.__init__(copy, error.message)
    copy.__dict__.update(error.__dict__)
    return copy


def _reduce_without_retries(error: AhaChatError) -> tuple[object, ...]:
    base = next(c for c in type(error).__mro__[1:] if c in _WITHOUT_RETRIES)
    return (_rebuild_without_retries, (base, error.message, error.__dict__.copy()))


def _rebuild_without_retries(cls: type[AhaChatError], message: str, state: dict[str, Any]) -> AhaChatError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return without_retries(error)


class AhaChatAudienceOperator(AhaChatBaseOperator):
    """
    Base of the operators that act on one user or, with ``recipients``, on many: each subclass names
    its ``action`` of the registry and takes its arguments; its template fields are ``user_id``
    (and ``phone``, where AhaChat reaches a customer by phone), the action's templated arguments,
    ``recipients`` and ``ledger_path``.

    With ``recipients`` the task runs the action for each of them through the bulk engine: at most
    ``rate_limit`` requests per second with ``concurrency`` in flight, per-recipient failures
    recorded without stopping the run, and a delivery ledger so that a retried or cleared task skips
    whoever was already reached. The XCom is a summary, never the list of recipients; it is also
    pushed under the key ``summary``, even when the task fails on too many failures.

    :param user_id: the one user's messenger_user_id, as a string (templated).
    :param recipients: many recipients instead of one (templated): a list of user IDs, a list of
        dicts each with ``user_id`` or ``phone`` (and, for actions that set attributes, their own
        attributes as further keys or under ``attributes``), an XComArg, or a ``.csv`` or ``.jsonl``
        file, local or on object storage (``s3://conn_id@bucket/audience.csv``), read row by row.
    :param concurrency: requests in flight at once; default from the connection, else 16.
    :param rate_limit: requests per second for this task; default from the connection, else 20.
    :param ledger_path: where the delivery ledger lives (templated): a local folder or an object
        storage URL; default ``[ahachat] ledger_path``, else ``$AIRFLOW_HOME/ahachat/ledger``.
    :param max_failures: the task fails when more recipients than this were not delivered (failed,
        invalid, unknown outcome, not sent), once every recipient had their turn.
    :param max_failure_ratio: the task fails when a larger share than this was not delivered. Each
        limit applies only when given; with neither, any recipient not delivered fails the task
        (``max_failure_ratio=1`` never does).
    :param dry_run: validate and render every recipient's request and report what would be sent;
        send nothing.
    :param progress_interval: seconds between progress lines in the task log.
    :param retry_unknown_outcome: also resend to recipients whose outcome was unknown in an earlier
        try of the task (and retry such requests at once), at the risk of a duplicate.
    :param dedupe_on: columns (of a file, or keys of the recipients' dicts) that, with the
        recipient, make a message distinct, e.g. ``["order_id"]``: one message per recipient and
        order, in this run and across the task's tries. Default: one message per recipient;
        later rows for the same recipient are counted as ``duplicate`` (repeats) and not sent.
    :param null_attributes: what a NULL or empty attribute value does: ``"invalid"`` (default) makes
        the row invalid, naming the row and the column, and nothing is sent to that recipient;
        ``"omit"`` leaves the attribute out (it keeps its value at AhaChat); ``"empty"`` sends it
        empty. Counted in the summary (``nulls``).
    :param resolve_phones: look up each recipient given by phone first (one request per phone) and
        address them by user ID: one customer listed once by user ID and once by phone is then sent
        to once. Off by default: phones are compared in E.164, user IDs as given, and the two cannot
        be told apart without a lookup.
    :param outside_window: for the operators that message: what a customer Messenger will not let
        the bot message now does (they last wrote more than 24 hours ago, or Meta says they are not
        available; AhaChat's answer is recognised in every shape). ``"fail"``: a single send fails
        the task with ``AhaChatOutsideWindowError``, without Airflow's retries (only the customer
        can open the window again, by writing or tapping a button; clear the task to try again); in
        a run for many they count against ``max_failures`` and ``max_failure_ratio``. ``"skip"``: a
        single send skips the task; a run for many reports them (``outside_window`` in the report,
        the summary and its line) and they do not count. ``"hold"``: the message is validated and
        held for the customer (see ``hold_for``), and shown to them in the answer to their next
        call of the bot's JSON API block (``POST /ahachat/webhooks/<conn_id>/<event>``, or
        ``.../_held``); a single send succeeds and returns ``{"held": 1, ...}``, a run for many
        reports them as ``held`` (the summary's ``held`` counts them) and they do not count.
        A customer given by phone is looked up first (one request), to hold it under their user
        ID. Default: ``"fail"`` for a single customer, ``"skip"`` for ``recipients``. Whichever
        it is, each is asked once: a later try of the task does not ask them again.
    :param hold_for: with ``outside_window="hold"``: how long a held message waits for its
        customer, a ``timedelta`` or seconds, at most 90 days; 7 days by default. An expired
        message is never delivered.
    :param delivery_mark: the name of an attribute each message also sets on its customer (for
        example ``"airflow_delivery"``), to a value unique to the task's ledger and the recipient.
        When a try of the task ends without knowing whether some messages arrived (its worker was
        lost while they were leaving, a read timeout), the next try looks each such customer up and
        sends only to those without the mark: nobody is lost or messaged twice. One lookup per
        unknown outcome; for the actions that message (broadcasts, text and dynamic messages), with
        ``recipients`` (or the SQL transfer's rows).
    """

    #: The name of this operator's action in the registry.
    action: str = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "action" not in cls.__dict__ or "template_fields" in cls.__dict__:
            return
        action = ACTIONS[cls.action]
        templated = [arg for arg in action.arguments if arg.templated]
        cls.template_fields = (
            "user_id",
            *(["phone"] if action.by_phone else []),
            *(name for arg in templated for name in arg.names),
            "recipients",
            "ledger_path",
        )
        cls.template_fields_renderers = {
            name: arg.renderer for arg in templated if arg.renderer for name in arg.names
        }

    def __init__(
        self,
        *,
        user_id: str | None = None,
        recipients: Any = None,
        concurrency: int | None = None,
        rate_limit: float | None = None,
        ledger_path: Any = None,
        max_failures: int | None = None,
        max_failure_ratio: float | None = None,
        dry_run: bool = False,
        progress_interval: float = 5.0,
        dedupe_on: str | Sequence[str] | None = None,
        null_attributes: str = "invalid",
        resolve_phones: bool = False,
        delivery_mark: str | None = None,
        outside_window: str | None = None,
        hold_for: Any = None,
        **kwargs: Any,
    ) -> None:
        if delivery_mark is not None and (reason := attribute_name_problem(delivery_mark, by_phone=True)):
            raise AhaChatValidationError(f"delivery_mark: {reason}")
        check_outside_window(self.action, outside_window, hold_for)
        bulk_options = BulkOptions(
            concurrency=concurrency,
            rate_limit=rate_limit,
            max_failures=max_failures,
            max_failure_ratio=max_failure_ratio,
            dry_run=dry_run,
            progress_interval=progress_interval,
            dedupe_on=dedupe_on,
            null_attributes=null_attributes,
            resolve_phones=resolve_phones,
            delivery_mark=delivery_mark,
        )
        if recipients is not None or dedupe_on is not None or null_attributes != "invalid":
            # Wrong values fail at parse time; a single send never imports the bulk engine.
            from airflow_provider_ahachat.bulk.setup import columns_of

            columns_of(bulk_options)
        super().__init__(**kwargs)
        self.user_id = user_id
        self.recipients = recipients
        self.ledger_path = ledger_path
        self.bulk_options = bulk_options
        self.outside_window = outside_window
        self.hold_for = hold_for
        self._runner: BulkRunner | None = None

    def action_arguments(self) -> dict[str, Any]:
        """
        The action's arguments other than who it is for (the tags, the text, the block...): the
        operator's attributes named as the registry names the action's arguments.
        """
        names = ACTIONS[self.action].argument_names
        return {name: getattr(self, name) for name in names if hasattr(self, name)}

    def prepare(self, client: AhaChatClient) -> ApiRequest:
        """The request for the single ``user_id`` (or ``phone``), from the registry."""
        user_id, phone = getattr(self, "user_id", None), getattr(self, "phone", None)
        if phone is None:
            user_id = validate_user_id(user_id)
        return client.prepare(self.action, self.action_arguments(), user_id=user_id, phone=phone)

    def single_recipient_given(self) -> bool:
        """Whether a single recipient (``user_id`` or ``phone``) was given."""
        return any(getattr(self, name, None) not in (None, "") for name in ("user_id", "phone"))

    def execute(self, context: Context) -> Any:
        if self.recipients is None:
            if self.bulk_options.delivery_mark is not None:
                raise AhaChatValidationError(
                    "delivery_mark: works with recipients (a bulk run keeps the ledger the mark is "
                    "checked against); a single send has none: leave it out, or pass recipients=[...]"
                )
            if self.bulk_options.dry_run:
                request = self.prepare(self.hook.client)
                self.log.info("AhaChat dry run: would send %s; nothing sent", request.describe())
                return {"dry_run": True, "would_send": 1, "request": request.preview()}
            return self.send_one(context)
        if self.single_recipient_given():
            raise AhaChatValidationError(
                "recipients: give either recipients or a single user_id/phone, not both"
            )
        return self.run_bulk(context, self.action, self.action_arguments(), self.recipients)

    def send_one(self, context: Context) -> Any:
        """
        Act for the single ``user_id`` (or ``phone``). A customer Messenger will not let the bot
        message now skips the task or fails it, as ``outside_window`` says; a refusal that a retry
        would meet again fails it without Airflow's retries.
        """
        from airflow_provider_ahachat.version_compat import skip

        choice = self.outside_window or OUTSIDE_WINDOW_SINGLE_DEFAULT
        holder = self.holder(context, self.action_arguments()) if choice == "hold" else None
        try:
            return super().execute(context)
        except AhaChatOutsideWindowError as err:
            if holder is not None:
                return self.hold_one(holder, err)
            if choice == "skip":
                raise skip(f"AhaChat: not sent (outside_window='skip'): {err}") from None
            raise without_retries(err) from None
        except AhaChatMessageTagRefusedError as err:
            raise without_retries(err) from None

    def holder(self, context: Context, arguments: dict[str, Any]) -> Holder:
        """
        Where ``outside_window="hold"`` holds this task's message: the store Airflow's configuration
        names, the message validated; built before anything is sent.
        """
        from airflow_provider_ahachat.held.delivery import Holder
        from airflow_provider_ahachat.held.location import held_store
        from airflow_provider_ahachat.held.store import TaskRef

        ti = context["ti"]
        map_index = getattr(ti, "map_index", -1)
        task = TaskRef(ti.dag_id, ti.run_id, ti.task_id, -1 if map_index is None else map_index)
        return Holder.of(
            held_store(),
            conn_id=self.ahachat_conn_id,
            bot_id=self.hook.client.bot_id,
            action=self.action,
            arguments=arguments,
            hold_for=self.hold_for,
            task=task,
        )

    def hold_one(self, holder: Holder, refusal: AhaChatOutsideWindowError) -> dict[str, Any]:
        """Hold the message Messenger refused for the single customer; what was held, for XCom."""
        client = self.hook.client
        recipient = self.prepare(client).recipient
        assert recipient is not None
        user_id = recipient.user_id
        if user_id is None:  # held under the user ID the customer calls back with
            user_id = client.run("find_user", phone=recipient.phone).data.messenger_user_id
        held_id = holder.hold(user_id, key=user_id)
        expires = holder.store.clock() + holder.hold_for.total_seconds()
        self.log.info(
            "AhaChat: %s for user %s: outside the 24-hour window; held (message %d) for their next "
            "call of the bot, for %s at most",
            self.action,
            user_id,
            held_id,
            holder.hold_for,
        )
        return {
            "action": self.action,
            "user_id": user_id,
            "phone": recipient.phone,
            "held": 1,
            "held_id": held_id,
            "hold_until": datetime.fromtimestamp(expires, timezone.utc).isoformat(),
            "reason": str(refusal),
        }

    def run_bulk(
        self,
        context: Context,
        action: str,
        arguments: dict[str, Any],
        recipients: Any,
        total: int | None = None,
        columns: Columns | None = None,
    ) -> dict[str, Any]:
        """
        Run ``action`` for every recipient through the bulk engine; return the summary.

        ``columns`` says which columns name the recipient and are attributes (default: a file's or
        a list's own, ``user_id`` or ``phone``), with this operator's ``dedupe_on`` and
        ``null_attributes``. A file's header is checked against them before anything is sent.
        """
        from airflow_provider_ahachat.bulk import AhaChatBulkError, open_recipients
        from airflow_provider_ahachat.bulk.setup import bulk_runner, columns_of, task_ledger

        options = self.bulk_options
        columns = columns or columns_of(options)
        ti = context["ti"]
        ledger = task_ledger(self.ledger_path, ti)
        runner = bulk_runner(
            self.hook,
            action,
            arguments,
            options,
            ledger=ledger,
            resend_unknown=self.retry_unknown_outcome,
            logger=self.log,
            columns=columns,
            outside_window=self.outside_window or OUTSIDE_WINDOW_BULK_DEFAULT,
            holder=self.holder(context, arguments)
            if self.outside_window == "hold" and not options.dry_run
            else None,
        )
        rows, counted = open_recipients(
            recipients, columns=columns, takes_attributes=ACTIONS[action].takes_attributes
        )
        self._runner = runner
        self.log.info(
            "AhaChat %s for %s recipients: %d in flight, %s requests/s at most, ledger %s%s",
            action,
            f"{counted:,}" if counted is not None else "all the",
            runner.concurrency,
            f"{runner.limiter.limit:g}" if runner.limiter.limit else "no limit on",
            ledger.folder,
            " (dry run: nothing is sent)" if options.dry_run else "",
        )
        try:
            summary = runner.run(rows, total if total is not None else counted)
        except AhaChatBulkError as err:
            # A failed task returns nothing, so its summary also goes under its own key, for
            # tasks downstream (trigger_rule="all_done") that report on the run.
            ti.xcom_push(key="summary", value=err.summary)
            raise
        finally:
            self._runner = None
        ti.xcom_push(key="summary", value=summary)
        return summary

    def on_kill(self) -> None:
        """Stop a bulk run: requests in flight finish and are recorded; the rest are not sent."""
        if self._runner is not None:
            self._runner.stop()


class FindUserOperator(AhaChatBaseOperator):
    """
    Find a user by ``user_id`` or by ``phone`` (exactly one); return everything about them.

    The XCom value is the user: ``messenger_user_id``, names, ``phone``, ``tags``, ``attributes``,
    ``last_interaction_at`` and ``subscribed``. The ID is also pushed under the XCom key
    ``messenger_user_id``, so ``find.output["messenger_user_id"]`` feeds it to the next operator.
    A phone that several users share fails the task, saying how many: find them by ``user_id``.

    :param user_id: the messenger_user_id, as a string (templated).
    :param phone: the phone number; spaces, dots and dashes are ignored (templated).
    :param not_found: what a customer AhaChat does not know does: ``"fail"`` the task
        (``AhaChatNotFoundError``, the default) or ``"skip"`` it, so that a DAG can branch on "not a
        customer yet". A Bot ID AhaChat does not know fails either way.
    :param ahachat_conn_id: the ``ahachat`` connection to use.
    """

    template_fields: Sequence[str] = ("user_id", "phone")
    #: Its action in the registry.
    action: ClassVar[str] = "find_user"

    def __init__(
        self,
        *,
        user_id: str | None = None,
        phone: str | None = None,
        not_found: Literal["fail", "skip"] = "fail",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not_found not in ("fail", "skip"):
            raise AhaChatValidationError(f'not_found: must be "fail" or "skip", got {not_found!r}')
        self.user_id = user_id
        self.phone = phone
        self.not_found = not_found

    def prepare(self, client: AhaChatClient) -> ApiRequest:
        return client.prepare("find_user", user_id=self.user_id, phone=self.phone)

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_ahachat.exceptions import AhaChatNotFoundError

        client = self.hook.client
        request = self.prepare(client)
        try:
            user = client.send(request)
        except AhaChatNotFoundError as err:
            if self.not_found != "skip":
                raise
            self.skip_unknown_customer(client, request, err)
        context["ti"].xcom_push(key="messenger_user_id", value=user.messenger_user_id)
        self.log.info("AhaChat: found user %s (%s)", user.messenger_user_id, user.first_name or "no name")
        return user.model_dump(mode="json")

    def skip_unknown_customer(self, client: AhaChatClient, request: ApiRequest, err: Exception) -> NoReturn:
        """Skip the task for a customer AhaChat does not know; fail it for a bot it does not know."""
        from airflow_provider_ahachat.conditions import UNKNOWN_BOT
        from airflow_provider_ahachat.exceptions import AhaChatNotFoundError
        from airflow_provider_ahachat.version_compat import skip

        try:  # a 404 may mean the bot, not the customer: ask about the bot
            client.run("check_connection")
        except AhaChatNotFoundError:
            raise AhaChatNotFoundError(
                f"connection {self.ahachat_conn_id!r}: {UNKNOWN_BOT}", status=404
            ) from None
        who = request.recipient.describe() if request.recipient else "this customer"
        raise skip(f"AhaChat knows no customer with {who} (not_found='skip'): {err}")


class AddTagsOperator(AhaChatAudienceOperator):
    """
    Add one or more tags to a user.

    For one user give ``user_id``, for many ``recipients``; those, ``ahachat_conn_id`` and the
    bulk settings are :class:`AhaChatAudienceOperator`'s.

    :param tags: a tag or a list of tags, each non-empty (templated).
    """

    action = "add_tags"

    def __init__(self, *, tags: str | list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tags = tags


class RemoveTagsOperator(AddTagsOperator):
    """
    Remove one or more tags from a user; the other arguments are :class:`AddTagsOperator`'s.

    :param tags: the tags to remove: a tag or a list of tags, each non-empty (templated).
    """

    action = "remove_tags"


class AddAttributesOperator(AhaChatAudienceOperator):
    """
    Set attributes on a user, e.g. ``{"codeso": 99999, "s_d_t": "0908071111"}``.

    For one user give ``user_id``, for many ``recipients``; those, ``ahachat_conn_id`` and the
    bulk settings are :class:`AhaChatAudienceOperator`'s.

    :param attributes: a dict, or a JSON object string, of name to string, number or boolean
        (templated). Names reserved by the Broadcast API (``phone``, ``ahachat_*``) are refused.
    """

    action = "add_attributes"

    def __init__(self, *, attributes: dict[str, Any] | str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.attributes = attributes


class ResetAttributesOperator(AhaChatAudienceOperator):
    """
    Clear one or more attributes from a user.

    For one user give ``user_id``, for many ``recipients``; those, ``ahachat_conn_id`` and the
    bulk settings are :class:`AhaChatAudienceOperator`'s.

    :param names: the names of the attributes to clear: a name or a list of names (templated).
    :param attributes: the same names, under the name AhaMake gives this field; give ``names`` or
        ``attributes``, not both (templated).
    """

    action = "reset_attributes"

    def __init__(
        self,
        *,
        names: str | list[str] | None = None,
        attributes: str | list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.names = names
        self.attributes = attributes


class SendTextMessageOperator(AhaChatAudienceOperator):
    """
    Send a text message (at most 2000 characters) to a user.

    Messenger lets a bot message a customer only within 24 hours of their last message or tap;
    outside that window Messenger refuses (``AhaChatOutsideWindowError``), and ``outside_window``
    says what that does to the task.

    For one user give ``user_id``, for many ``recipients``; those, ``ahachat_conn_id``,
    ``outside_window`` and the bulk settings are :class:`AhaChatAudienceOperator`'s.

    :param text: the text (templated).
    """

    action = "send_text"

    def __init__(self, *, text: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.text = text


class SendDynamicMessageOperator(AhaChatAudienceOperator):
    """
    Send a dynamic message in AhaChat's JSON API format: images, video, audio, files, galleries,
    receipts, buttons and quick replies. The same 24-hour rule as text applies.

    For one user give ``user_id``, for many ``recipients``; those, ``ahachat_conn_id``,
    ``outside_window`` and the bulk settings are :class:`AhaChatAudienceOperator`'s.

    :param message: the whole object (``{"messages": [...], "set_attributes": ..., "redirect_to_blocks":
        ...}``), a list of messages, or either as a JSON string (templated). It is checked against
        Messenger's limits before sending.
    """

    action = "send_message"

    def __init__(self, *, message: dict[str, Any] | list[Any] | str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.message = message


class BroadcastBlockOperator(AhaChatAudienceOperator):
    """
    Start a chatbot block for a user through AhaChat's Broadcast API.

    Without a message tag (the default) the block is a standard message: Messenger delivers it to
    customers who wrote in the last 24 hours, and refuses it for the others
    (``AhaChatOutsideWindowError``; ``outside_window`` says what that does to the task).
    ``attributes`` are saved on the user before the block runs, so the block can show them
    (``{{order_id}}``).

    For one user give ``user_id``, for many ``recipients``; those, ``ahachat_conn_id``,
    ``outside_window`` and the bulk settings are :class:`AhaChatAudienceOperator`'s.

    :param block_name: the block to start (templated).
    :param phone: the phone number, instead of ``user_id`` (templated).
    :param message_tag: none by default (or the connection's ``default_message_tag``).
        ``HUMAN_AGENT``, any case, is a person's reply within 7 days of the customer's last
        message (the page needs Meta's Human Agent permission; never for automated messages).
        ``CONFIRMED_EVENT_UPDATE``, ``POST_PURCHASE_UPDATE`` and ``ACCOUNT_UPDATE`` (retired by
        Meta on 27 April 2026) and ``NON_PROMOTIONAL_SUBSCRIPTION`` (news pages only) fail when the
        DAG is parsed; a tag the connection's ``message_tags`` allows can be given templated, or as
        its ``default_message_tag`` (templated).
    :param attributes: a dict, or a JSON object string, of attributes to save first (templated).
    """

    action = "broadcast_block"

    def __init__(
        self,
        *,
        block_name: str,
        phone: str | None = None,
        message_tag: MessageTag | str | None = None,
        attributes: dict[str, Any] | str | None = None,
        **kwargs: Any,
    ) -> None:
        tag = literal_message_tag(message_tag)  # a tag Meta retired fails here, when the DAG is parsed
        super().__init__(**kwargs)
        self.block_name = block_name
        self.phone = phone
        self.message_tag = tag
        self.attributes = attributes


class AhaChatApiOperator(AhaChatBaseOperator):
    """
    Call any AhaChat path, for what the other operators do not wrap (like ``SlackAPIOperator``).

    The token is added from the connection, and the errors, retries and redaction are those of
    every operator; the XCom value is AhaChat's whole answer, the token removed.

    .. code-block:: python

        AhaChatApiOperator(
            task_id="sequences",
            method="POST",
            path="/api/bots/{bot_id}/users/{{ params.user_id }}/sequences",
            json={"sequence": "Chăm sóc sau mua hàng"},
        )

    :param method: ``GET``, ``POST``, ``PUT``, ``PATCH`` or ``DELETE`` (templated).
    :param path: the path from the root; ``{bot_id}`` is filled with the connection's Bot ID
        (templated).
    :param query: the query string, a dict (templated); not the token. Named ``query`` because
        ``params`` is Airflow's own argument of every operator.
    :param json: the JSON body, if any (templated).
    :param sends_message: whether the request may message a customer, so that it is not resent
        when its outcome is unknown; by default, any method but ``GET``.
    :param ahachat_conn_id: the ``ahachat`` connection to use.
    :param retry_unknown_outcome: resend when the outcome is unknown, at the risk of a duplicate.
    """

    template_fields: Sequence[str] = ("method", "path", "query", "json")

    def __init__(
        self,
        *,
        method: str,
        path: str,
        query: dict[str, Any] | None = None,
        json: Any = None,
        sends_message: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.method = method
        self.path = path
        self.query = query
        self.json = json
        self.sends_message = sends_message

    def prepare(self, client: AhaChatClient) -> ApiRequest:
        return client.prepare_call(
            self.method, self.path, self.query, self.json, sends_message=self.sends_message
        )

    def execute(self, context: Context) -> Any:
        client = self.hook.client
        request = self.prepare(client)  # bad input fails here, before anything is sent
        started = time.monotonic()
        answer = client.send(request)
        self.log.info(
            "AhaChat: %s accepted in %.0f ms; AhaChat answered %s",
            request.describe(),
            1000 * (time.monotonic() - started),
            client.bounded(json.dumps(answer, ensure_ascii=False, default=str), 300),
        )
        return answer
