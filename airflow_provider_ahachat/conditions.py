"""
What a customer must look like for a wait to end. No Airflow import here.

:class:`UserConditions` says what to wait for; :class:`Watch` judges each look at the customer
("matched", "not yet", or a failure waiting cannot cure, such as a wrong Bot ID). Both are shared by
the sensor (poke and reschedule modes, synchronous) and its trigger (deferrable mode, asynchronous),
which only fetch the customer and act on the verdict.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_ahachat.exceptions import (
    TRANSIENT_ERRORS,
    AhaChatError,
    AhaChatNotFoundError,
    AhaChatValidationError,
)
from airflow_provider_ahachat.models import Recipient, User, attribute_query_value, load_json, validate_tags

#: What a 404 on the bot itself means, in words a person can act on.
UNKNOWN_BOT = "AhaChat knows no bot with this Bot ID. Copy it again from the bot's Settings in AhaChat."

AttributeCondition = str | int | float | bool | None


def _check_attribute_conditions(value: Any, field_name: str) -> dict[str, AttributeCondition]:
    value = load_json(value, field_name)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise AhaChatValidationError(
            f"{field_name}: must be an object of attribute name to wanted value, got {type(value).__name__}"
        )
    result: dict[str, AttributeCondition] = {}
    for name, wanted in value.items():
        if not isinstance(name, str) or not name.strip():
            raise AhaChatValidationError(
                f"{field_name}: attribute names must be non-empty strings, got {name!r}"
            )
        where = f"{field_name}.{name}"
        if isinstance(wanted, float) and not math.isfinite(wanted):
            raise AhaChatValidationError(f"{where}: must be a finite number, got {wanted!r}")
        if wanted is not None and not isinstance(wanted, str | int | float | bool):
            raise AhaChatValidationError(
                f"{where}: the wanted value must be a string, number, boolean or None (None: set to "
                f"anything), got {type(wanted).__name__}"
            )
        result[name.strip()] = wanted
    return result


def _optional_tags(value: Any, field_name: str) -> list[str]:
    if value is None or (isinstance(value, list | tuple) and not value):
        return []
    return validate_tags(value, field_name)


def _as_text(value: Any) -> str:
    """An attribute value as AhaChat stores it: the Broadcast API saves every attribute as text."""
    try:
        return attribute_query_value(value)
    except AhaChatValidationError:
        return str(value)


#: How a yes/no attribute may read, whoever wrote it: AhaChat's yes/no, or JSON's true/false.
_BOOLEAN_TEXTS = {True: frozenset({"yes", "true"}), False: frozenset({"no", "false"})}


def _matches(actual: Any, wanted: AttributeCondition) -> bool:
    if isinstance(wanted, bool):
        return _as_text(actual).strip().lower() in _BOOLEAN_TEXTS[wanted]
    return _as_text(actual) == _as_text(wanted)


@dataclass(frozen=True)
class UserConditions:
    """
    Conditions on one customer, all of which must hold. With none, the customer only has to exist.

    Attribute values are compared as text, the way the Broadcast API stores them: ``3`` matches
    ``"3"``; ``True`` matches AhaChat's ``"yes"`` (and ``"true"``), ``False`` ``"no"`` (and ``"false"``).

    :param attributes: attribute name to wanted value; ``None`` means "set, to anything".
    :param tags: tags the customer must all have.
    :param absent_tags: tags the customer must have none of.
    """

    attributes: dict[str, AttributeCondition] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    absent_tags: tuple[str, ...] = ()

    @classmethod
    def parse(cls, attributes: Any = None, tags: Any = None, absent_tags: Any = None) -> UserConditions:
        """
        Validate conditions as a DAG author writes them (dicts, lists, or JSON strings of them).

        :raises AhaChatValidationError: naming the field and the rule.
        """
        wanted = _check_attribute_conditions(attributes, "attributes")
        having = _optional_tags(tags, "tags")
        lacking = _optional_tags(absent_tags, "absent_tags")
        both = sorted(set(having) & set(lacking))
        if both:
            raise AhaChatValidationError(
                f"tags, absent_tags: {', '.join(both)} cannot be both required and forbidden"
            )
        return cls(attributes=wanted, tags=tuple(having), absent_tags=tuple(lacking))

    def to_json(self) -> dict[str, Any]:
        """The conditions as plain JSON (for a trigger's stored arguments)."""
        return {
            "attributes": dict(self.attributes),
            "tags": list(self.tags),
            "absent_tags": list(self.absent_tags),
        }

    def unmet(self, user: User) -> list[str]:
        """What still does not hold for ``user``, in words; empty when every condition holds."""
        problems: list[str] = []
        for name, wanted in self.attributes.items():
            if name not in user.attributes or user.attributes[name] is None:
                problems.append(
                    f"attribute {name!r} is not set"
                    + ("" if wanted is None else f" (waiting for {wanted!r})")
                )
            elif wanted is not None and not _matches(user.attributes[name], wanted):
                actual = _as_text(user.attributes[name])
                shown = actual if len(actual) <= 40 else actual[:37] + "..."
                problems.append(f"attribute {name!r} is {shown!r}, waiting for {wanted!r}")
        for tag in self.tags:
            if tag not in user.tags:
                problems.append(f"tag {tag!r} is missing")
        for tag in self.absent_tags:
            if tag in user.tags:
                problems.append(f"tag {tag!r} is still there")
        return problems

    def describe(self) -> str:
        """The conditions in words, for logs."""
        parts = [
            f"{name}={'<any>' if wanted is None else repr(wanted)}"
            for name, wanted in self.attributes.items()
        ]
        parts += [f"tag {tag}" for tag in self.tags]
        parts += [f"no tag {tag}" for tag in self.absent_tags]
        return ", ".join(parts) if parts else "the user exists"


@dataclass(frozen=True)
class Look:
    """
    The verdict on one look at the customer.

    :param done: whether the wait is over.
    :param message: what to log.
    :param warning: whether to log it as a warning (a failure that the next look may cure).
    :param user: the customer, when the wait is over.
    :param ask_about_bot: whether to check the bot before the next look (a 404 may be a wrong Bot ID).
    """

    done: bool
    message: str
    warning: bool = False
    user: User | None = None
    ask_about_bot: bool = False


class Watch:
    """
    Judges each look at one customer: the sensor's and the trigger's one verdict function.

    :param conn_id: the connection, named in errors.
    :param recipient: who is watched.
    :param conditions: what they must match.
    :param check: a callable given the :class:`User`, True when the wait is over (sensor only).
    """

    def __init__(
        self,
        conn_id: str,
        recipient: Recipient,
        conditions: UserConditions,
        check: Any = None,
    ) -> None:
        self.conn_id = conn_id
        self.recipient = recipient
        self.conditions = conditions
        self.check = check
        self.bot_known = False

    def judge(self, user: User | None, error: AhaChatError | None) -> Look:
        """
        The verdict on a look that found ``user``, or failed with ``error``.

        :raises AhaChatError: ``error`` itself when waiting cannot cure it (a wrong token, bad input).
        """
        who = self.recipient.describe()
        if error is not None:
            if isinstance(error, AhaChatNotFoundError):
                return Look(
                    False, f"AhaChat: no {who} yet; checking again later", ask_about_bot=not self.bot_known
                )
            if isinstance(error, TRANSIENT_ERRORS):
                return Look(False, f"{error.message}; checking again at the next interval", warning=True)
            raise error
        assert user is not None
        unmet = self.conditions.unmet(user)
        if unmet:
            return Look(False, f"AhaChat: {who} not ready: {'; '.join(unmet)}")
        if self.check is not None and not self.check(user):
            return Look(False, f"AhaChat: {who} matches the conditions, but not yet the check")
        return Look(True, f"AhaChat: {who} matches ({self.conditions.describe()})", user=user)

    def bot_checked(self, error: AhaChatError | None) -> None:
        """
        Take the answer to the bot check that a 404 asked for (None: the bot exists).

        :raises AhaChatNotFoundError: when AhaChat knows no bot with the connection's Bot ID.
        """
        if error is None:
            self.bot_known = True
        elif isinstance(error, AhaChatNotFoundError):
            raise AhaChatNotFoundError(f"connection {self.conn_id!r}: {UNKNOWN_BOT}", status=404)
        elif not isinstance(error, TRANSIENT_ERRORS):
            raise error
