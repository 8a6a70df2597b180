"""
The sandbox's world: its bots and their customers, and the error every operation may answer with.

Nothing here knows about HTTP. A failed operation raises :class:`ApiError` carrying the status and
message the API answers with. Input rules are the provider's own (:mod:`airflow_provider_ahachat.models`),
so the sandbox refuses exactly what the provider refuses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from pydantic import ConfigDict

from airflow_provider_ahachat.exceptions import AhaChatValidationError
from airflow_provider_ahachat.models import (
    MessageTag,
    User,
    normalize_phone,
)
from airflow_provider_ahachat.sandbox.messenger import (
    Refusal,
    refusal,
)

REDACTED = "***"

#: The user's profile fields (strings or null), which placeholders and the control API may name.
_NOT_PROFILE = frozenset({"tags", "attributes", "last_interaction_at", "subscribed"})
PROFILE_FIELDS = tuple(name for name in User.model_fields if name not in _NOT_PROFILE)


class ApiError(Exception):
    """
    An error answer of the API.

    :param status: the HTTP status.
    :param message: the ``message`` of the answer.
    :param problems: for invalid input, one line per problem, each naming its field.
    :param headers: extra response headers, such as ``Retry-After``.
    :param meta: Meta's error object, when the answer passes on Messenger's refusal.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        problems: list[str] | None = None,
        headers: dict[str, str] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.problems = problems
        self.headers = headers or {}
        self.meta = meta

    @classmethod
    def invalid(cls, err: AhaChatValidationError) -> ApiError:
        """A 400 answer listing the problems of a failed input rule."""
        return cls(400, str(err), problems=list(err.problems))

    @classmethod
    def refused(cls, refused: Refusal) -> ApiError:
        """Messenger's refusal, passed on: Meta's text as the message, Meta's object as ``error``."""
        return cls(refused.status, refused.text, meta=refused.error)

    def to_json(self) -> dict[str, Any]:
        """The answer body."""
        body: dict[str, Any] = {"success": False, "message": self.message}
        if self.problems:
            body["problems"] = self.problems
        if self.meta is not None:
            body["error"] = self.meta
        return body


def checked(rule: Callable[..., Any], *args: Any) -> Any:
    """``rule(*args)``, with a failed input rule turned into a 400 answer listing its problems."""
    try:
        return rule(*args)
    except AhaChatValidationError as err:
        raise ApiError.invalid(err) from None


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(timezone.utc)


def isoformat(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC with a ``Z``, to the millisecond."""
    if moment is None:
        return None
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def phone_key(value: Any, field: str = "phone") -> str:
    """
    The form under which a phone number is indexed and looked up.

    The number is normalised with :func:`~airflow_provider_ahachat.models.normalize_phone`, then a
    Vietnamese number in national form (leading ``0``) or without its ``+`` (``84`` and 9 digits, as
    left when a literal ``+`` in a query string was read as a space) becomes ``+84...``.
    """
    text = normalize_phone(value, field)
    if text.startswith("0"):
        return "+84" + text[1:]
    if len(text) == 11 and text.startswith("84"):
        return "+" + text
    return text


# --------------------------------------------------------------------------- users, bots


def synthetic_user_id(number: int) -> str:
    """The ID of generated customer ``number``: 16 digits starting with 9."""
    return f"9{number:015d}"


def synthetic_phone(number: int) -> str:
    """The phone of generated customer ``number``: ``+849`` and 8 digits (numbers past 10**8 wrap)."""
    return f"+849{number % 10**8:08d}"


class SandboxUser(User):
    """
    One customer of a bot: the provider's :class:`~airflow_provider_ahachat.models.User`, with what
    the sandbox does to it. A missing field keeps :class:`User`'s default; ``last_interaction_at``
    ``None`` means the user never wrote, and a user with ``subscribed`` False gets nothing.
    """

    model_config = ConfigDict(extra="forbid")

    def add_tags(self, tags: Iterable[str]) -> None:
        """Add tags the user does not have yet, keeping their order."""
        for tag in tags:
            if tag not in self.tags:
                self.tags.append(tag)

    def remove_tags(self, tags: Iterable[str]) -> None:
        """Remove tags; tags the user does not have are ignored."""
        gone = set(tags)
        self.tags[:] = [tag for tag in self.tags if tag not in gone]

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        """Set attributes, replacing their old values."""
        self.attributes.update(attributes)

    def reset_attributes(self, names: Iterable[str]) -> None:
        """Clear attributes; names the user does not have are ignored."""
        for name in names:
            self.attributes.pop(name, None)

    def to_json(self) -> dict[str, Any]:
        """The user as the API answers with it."""
        values: dict[str, Any] = dict(self.__dict__)  # the model's fields, in its order
        values["tags"] = list(self.tags)
        values["attributes"] = dict(self.attributes)
        values["last_interaction_at"] = isoformat(self.last_interaction_at)
        return values

    def refusal(self, tag: MessageTag | None, rules: str) -> Refusal | None:
        """Why Messenger refuses a message with ``tag`` to this user now, under ``rules``; None if not."""
        return refusal(
            last_interaction_at=self.last_interaction_at,
            subscribed=self.subscribed,
            tag=tag,
            now=utcnow(),
            rules=rules,
        )

    def context(self) -> dict[str, Any]:
        """The values placeholders may name: profile fields, overlaid by attributes."""
        values: dict[str, Any] = {name: getattr(self, name) for name in PROFILE_FIELDS}
        values.update(self.attributes)
        return values


@dataclass(slots=True)
class Bot:
    """
    One AhaChat bot.

    :param id: the bot ID, a string of digits.
    :param name: the bot's name.
    :param token: the bot's API token.
    :param blocks: block name to dynamic message (``messages``, ``set_attributes``, ``redirect_to_blocks``).
    :param users: users by ``messenger_user_id``.
    :param phones: user IDs by :func:`phone_key`.
    """

    id: str
    name: str
    token: str
    blocks: dict[str, dict[str, Any]] = field(default_factory=dict)
    users: dict[str, SandboxUser] = field(default_factory=dict)
    phones: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The bot as ``GET /api/bots/<id>`` answers with it (never the token)."""
        return {"id": self.id, "name": self.name}

    def add_user(self, user: SandboxUser) -> None:
        """Add a user and index their phone."""
        self.users[user.messenger_user_id] = user
        if user.phone:
            self.phones.setdefault(phone_key(user.phone), user.messenger_user_id)

    def reindex_phones(self) -> None:
        """Rebuild the phone index after a phone changed."""
        self.phones = {}
        for user in self.users.values():
            if user.phone:
                self.phones.setdefault(phone_key(user.phone), user.messenger_user_id)
