"""
Wait for a customer to answer: ``UserSensor`` succeeds once a customer's attributes and tags match.

Importing this module is light (no ``requests``, no ``httpx``, no client): DAG files import it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseSensorOperator, PokeReturnValue

from airflow_provider_ahachat.conditions import UserConditions, Watch
from airflow_provider_ahachat.exceptions import AhaChatError, AhaChatValidationError
from airflow_provider_ahachat.hooks.ahachat import AhaChatHook
from airflow_provider_ahachat.models import Recipient, User
from airflow_provider_ahachat.version_compat import conf, sensor_timeout

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_ahachat.request import ApiRequest

__all__ = ["UserSensor"]


def _attempt(call: Callable[..., Any], *args: Any) -> tuple[Any, AhaChatError | None]:
    """``call(*args)``'s result and None, or None and the AhaChat error it raised."""
    try:
        return call(*args), None
    except AhaChatError as err:
        return None, err


def _error_from_event(event: dict[str, Any]) -> AhaChatError:
    """The error a trigger's error event describes, as its own class where it is one of ours."""
    from airflow_provider_ahachat import exceptions

    name = str(event.get("error") or "AhaChatError")
    message = str(event.get("message") or "the trigger failed without a message")
    error_class = getattr(exceptions, name, None)
    if not (isinstance(error_class, type) and issubclass(error_class, exceptions.AhaChatError)):
        return exceptions.AhaChatError(f"{name}: {message}")
    if issubclass(error_class, AhaChatValidationError):
        return error_class(message)
    status = event.get("http_status")
    return error_class(message, status=status if isinstance(status, int) else None)


class UserSensor(BaseSensorOperator):
    """
    Wait until a customer, found by ``user_id`` or ``phone`` (exactly one), matches every condition.

    With no condition it waits for the customer to exist. It returns the customer (XCom), as
    :class:`~airflow_provider_ahachat.operators.ahachat.FindUserOperator` does.

    It works in the three ways of Airflow sensors: ``mode="poke"`` (holds a worker slot and sleeps
    between checks), ``mode="reschedule"`` (frees the slot between checks), and ``deferrable=True``:
    one check on the worker, then the wait moves to the triggerer
    (:class:`~airflow_provider_ahachat.triggers.ahachat.UserTrigger`), which polls asynchronously.
    ``poke_interval``, ``timeout``, ``soft_fail``, ``exponential_backoff`` and ``max_wait`` apply in
    all three.

    A customer who does not exist yet, rate limits (429), server errors (5xx) and connection
    failures are "not yet": they are logged and the next check tries again. A wrong token and bad
    input fail the task at once, with the error that names the problem (never skipped by
    ``soft_fail``, which only applies to the timeout).

    .. code-block:: python

        UserSensor(
            task_id="wait_for_confirmation",
            user_id="{{ ti.xcom_pull('find')['messenger_user_id'] }}",
            attributes={"delivery_confirmed": "yes"},
            absent_tags=["da_huy_don"],
            deferrable=True,
            poke_interval=300,
            timeout=2 * 24 * 3600,
        )

    :param user_id: the customer's messenger_user_id, as a string; give this or ``phone`` (templated).
    :param phone: the customer's phone number; give this or ``user_id`` (templated).
    :param attributes: attribute name to wanted value; ``None`` as the value means "set, to
        anything". Values are compared as text, as AhaChat stores them (templated).
    :param tags: tags the customer must all have (templated).
    :param absent_tags: tags the customer must have none of (templated).
    :param check: in poke and reschedule modes only, a callable given the
        :class:`~airflow_provider_ahachat.models.User` that returns True when the wait is over; it
        is checked after the other conditions. A trigger cannot run it, so it is refused with
        ``deferrable=True``.
    :param deferrable: wait in the triggerer. Defaults to ``[operators] default_deferrable``.
    :param ahachat_conn_id: the ``ahachat`` connection to use.
    """

    template_fields: Sequence[str] = ("user_id", "phone", "attributes", "tags", "absent_tags")
    template_fields_renderers: ClassVar[dict[str, str]] = {"attributes": "json"}
    ui_color = "#f4c20d"

    def __init__(
        self,
        *,
        user_id: str | None = None,
        phone: str | None = None,
        attributes: dict[str, Any] | str | None = None,
        tags: str | list[str] | None = None,
        absent_tags: str | list[str] | None = None,
        check: Callable[[User], bool] | None = None,
        deferrable: bool | None = None,
        ahachat_conn_id: str = AhaChatHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.user_id = user_id
        self.phone = phone
        self.attributes = attributes
        self.tags = tags
        self.absent_tags = absent_tags
        self.check = check
        if deferrable is None:
            deferrable = conf().getboolean("operators", "default_deferrable", fallback=False)
        self.deferrable = deferrable
        self.ahachat_conn_id = ahachat_conn_id
        problems = []
        has_user, has_phone = user_id not in (None, ""), phone not in (None, "")
        if has_user == has_phone:
            problems.append(
                "user_id, phone: give exactly one of them" + (" (both were given)" if has_user else "")
            )
        if check is not None and not callable(check):
            problems.append(f"check: must be a callable taking the User, got {type(check).__name__}")
        if check is not None and self.deferrable:
            problems.append(
                "check: a callable cannot run in the triggerer, so it is not allowed with deferrable=True; "
                "use attributes, tags and absent_tags, or set deferrable=False (mode 'poke' or 'reschedule')"
            )
        if problems:
            raise AhaChatValidationError([f"{self.task_id}: {problem}" for problem in problems])

    @cached_property
    def hook(self) -> AhaChatHook:
        """The hook for ``ahachat_conn_id``."""
        # One attempt per check: the sensor checks again at its next interval anyway.
        return AhaChatHook(ahachat_conn_id=self.ahachat_conn_id, max_retries=0)

    # -- validation, once the templates are rendered

    @cached_property
    def recipient(self) -> Recipient:
        """Who to look at, validated."""
        return Recipient.of(user_id=self.user_id, phone=self.phone)

    @cached_property
    def conditions(self) -> UserConditions:
        """What to wait for, validated."""
        return UserConditions.parse(attributes=self.attributes, tags=self.tags, absent_tags=self.absent_tags)

    @cached_property
    def _request(self) -> ApiRequest:
        return self.hook.client.prepare(
            "find_user", user_id=self.recipient.user_id, phone=self.recipient.phone
        )

    # -- the three modes

    def execute(self, context: Context) -> Any:
        # Bad input fails here, before the first request.
        recipient, conditions = self.recipient, self.conditions
        self.log.info("AhaChat: waiting for %s: %s", recipient.describe(), conditions.describe())
        if not self.deferrable:
            return super().execute(context)
        deadline = datetime.now(timezone.utc) + timedelta(seconds=self.timeout)
        result = self.poke(context)
        if result:
            return result.xcom_value
        from airflow_provider_ahachat.triggers.ahachat import UserTrigger

        self.defer(
            trigger=UserTrigger(
                ahachat_conn_id=self.ahachat_conn_id,
                user_id=recipient.user_id,
                phone=recipient.phone,
                **conditions.to_json(),
                poke_interval=self.poke_interval,
                exponential_backoff=self.exponential_backoff,
                max_wait=self.max_wait.total_seconds() if self.max_wait is not None else None,
                deadline=deadline,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout),
        )

    @cached_property
    def watch(self) -> Watch:
        """Judges each look at the customer, as the trigger does."""
        return Watch(self.ahachat_conn_id, self.recipient, self.conditions, self.check)

    def poke(self, context: Context) -> PokeReturnValue:
        """One look at the customer."""
        client = self.hook.client
        user, error = _attempt(client.send, self._request)
        look = self.watch.judge(user, error)
        if look.ask_about_bot:
            self.watch.bot_checked(_attempt(client.run, "check_connection")[1])
        if look.warning:
            self.log.warning("%s", look.message)
        else:
            self.log.info("%s", look.message)
        if not look.done or look.user is None:
            return PokeReturnValue(False)
        return PokeReturnValue(True, xcom_value=look.user.model_dump(mode="json"))

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """Resume after the trigger: return the customer, or fail as its event says."""
        if not event:
            raise AhaChatError("The AhaChat trigger ended without an event")
        status = event.get("status")
        if status == "success":
            user = event.get("user") or {}
            self.log.info("AhaChat: %s matches (%s)", self.recipient.describe(), self.conditions.describe())
            return user
        if status == "timeout":
            # BaseSensorOperator turns this into a skip when soft_fail is set.
            raise sensor_timeout(str(event.get("message") or "The AhaChat sensor timed out"))
        raise _error_from_event(event)
