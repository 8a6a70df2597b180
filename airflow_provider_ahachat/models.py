"""
What the provider sends to and reads from AhaChat, and the rules input must follow.

No Airflow import here. Every rule raises :class:`AhaChatValidationError` naming the field and the
rule, so that bad input stops before a request leaves the machine. The sandbox enforces the same
rules with the same functions.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from types import MappingProxyType
from typing import Any, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from airflow_provider_ahachat.exceptions import AhaChatValidationError

T = TypeVar("T")

#: Query names of the Broadcast API. Every ``ahachat_*`` name is AhaChat's own (any case, and any
#: name a PHP query parser reads as one); ``phone`` is the Broadcast API's own only in the by-phone form.
RESERVED_ATTRIBUTE_NAMES = frozenset({"ahachat_token", "ahachat_message_tag", "ahachat_block_name", "phone"})
#: The prefix AhaChat keeps for its own query names, as Chatfuel keeps ``chatfuel_``.
RESERVED_PREFIX = "ahachat_"

#: What an attribute value may be given as; see :func:`attribute_value` for how each is sent.
AttributeValue = str | int | float | bool | Decimal | date | datetime | list[Any] | dict[str, Any]
#: What an attribute value is sent as, once converted to AhaChat's types.
WireValue = str | int | float

#: AhaChat's formats of its date and datetime attribute types.
DATE_FORMAT = "%d/%m/%Y"
DATETIME_FORMAT = "%d/%m/%Y %H:%M:%S"
#: How a boolean is written: AhaChat's yes/no attribute type.
YES, NO = "yes", "no"

# Messenger's limits, as AhaChat passes them on.
MAX_TEXT = 2000
MAX_BUTTON_TEMPLATE_TEXT = 640
MAX_BUTTONS = 3
MAX_GALLERY_ELEMENTS = 10
MAX_QUICK_REPLIES = 13
MAX_BUTTON_TITLE = 20
MAX_ELEMENT_TITLE = 80

MEDIA_EXTENSIONS: dict[str, frozenset[str] | None] = {
    "image": frozenset({"jpg", "jpeg", "png", "gif"}),
    "video": frozenset({"mp4"}),
    "audio": frozenset({"mp3", "ogg", "wav"}),
    "file": None,
}
BUTTON_TYPES = ("web_url", "show_block", "phone_number", "json_plugin_url")
TEMPLATE_TYPES = ("button", "generic", "receipt")

_PHONE_SEPARATORS = re.compile(r"[\s.\-]")
_PHONE = re.compile(r"\+?[0-9]{9,15}")
_DIGITS = re.compile(r"[0-9]+")


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def load_json(value: Any, field: str) -> Any:
    """Parse ``value`` if it is a string of JSON; return anything else unchanged."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as err:
        raise AhaChatValidationError(
            f"{field}: is a string but not valid JSON ({err.msg} at line {err.lineno} column {err.colno})"
        ) from None


def each_checked(items: Iterable[Any], check: Callable[[Any, str], T], field: str) -> list[T]:
    """
    Every item of ``items`` checked by ``check`` (given the item and ``field[index]``), with the
    problems of all of them in one error rather than only the first's.

    :raises AhaChatValidationError: listing every item's problem, each naming its index.
    """
    problems: list[str] = []
    checked: list[T] = []
    for index, item in enumerate(items):
        try:
            checked.append(check(item, f"{field}[{index}]"))
        except AhaChatValidationError as err:
            problems.extend(err.problems)
    if problems:
        raise AhaChatValidationError(problems)
    return checked


def corrected(
    table: Mapping[str, T],
    overrides: Any,
    field: str,
    shape: tuple[str, str],
    correct: Callable[[T, Any, str], T],
) -> Mapping[str, T]:
    """
    ``table`` with the corrections a connection's extra gives (``endpoints``, ``answer_keys``): a
    mapping, or a JSON object string, of a name of ``table`` to its correction.

    :param shape: what the extra must be, and what each name must be, for the errors: e.g.
        ``('object of endpoint name to "METHOD /path"', "an endpoint")``.
    :param correct: the corrected entry, from the entry, the correction and its field name; raises
        :class:`AhaChatValidationError` naming that field.
    :raises AhaChatValidationError: listing every unknown name (with the valid ones) and bad value.
    """
    overrides = load_json(overrides, field) if overrides != "" else None
    if not overrides:
        return table
    if not isinstance(overrides, Mapping):
        raise AhaChatValidationError(f"{field}: must be an {shape[0]}, got {type(overrides).__name__}")
    result = dict(table)
    problems: list[str] = []
    for name, value in overrides.items():
        if name not in table:
            problems.append(f"{field}.{name}: not {shape[1]}; use one of {', '.join(table)}")
            continue
        try:
            result[name] = correct(table[name], value, f"{field}.{name}")
        except AhaChatValidationError as err:
            problems.extend(err.problems)
    if problems:
        raise AhaChatValidationError(problems)
    return MappingProxyType(result)


# --------------------------------------------------------------------------- identifiers


class MessageTag(str, Enum):
    """
    The Messenger message tags AhaChat's Broadcast API names. Meta's rules as of December 2026:

    - ``HUMAN_AGENT``: a person's reply to the customer, within 7 days of the customer's last
      message; the page's app needs Meta's Human Agent permission; never for automated messages.
    - ``CONFIRMED_EVENT_UPDATE``, ``POST_PURCHASE_UPDATE`` and ``ACCOUNT_UPDATE``: retired by Meta
      on 27 April 2026; Messenger refuses a message carrying one with error 100, inside the 24-hour
      window as well as outside it.
    - ``NON_PROMOTIONAL_SUBSCRIPTION``: only for pages in Meta's News Page Index, since 4 March 2020.

    The provider sends no tag unless told (a standard message, for customers inside the 24-hour
    window). :data:`RETIRED_MESSAGE_TAGS` says why each refused tag is refused; a connection's
    extra ``message_tags`` replaces the built-in rule (:class:`MessageTagRule`).
    """

    #: Retired by Meta on 27 April 2026. Was: reminders of an event the user registered for.
    CONFIRMED_EVENT_UPDATE = "CONFIRMED_EVENT_UPDATE"
    #: Retired by Meta on 27 April 2026. Was: receipts, order and shipping status.
    POST_PURCHASE_UPDATE = "POST_PURCHASE_UPDATE"
    #: Retired by Meta on 27 April 2026. Was: changes to the user's account, payment, fraud alerts.
    ACCOUNT_UPDATE = "ACCOUNT_UPDATE"
    #: A person's reply to the user, within 7 days of the user's last message (Meta's Human Agent
    #: permission; never automated).
    HUMAN_AGENT = "HUMAN_AGENT"
    #: Only for pages in Meta's News Page Index since 4 March 2020.
    NON_PROMOTIONAL_SUBSCRIPTION = "NON_PROMOTIONAL_SUBSCRIPTION"

    @classmethod
    def parse(cls, value: MessageTag | str, field: str = "message_tag") -> MessageTag:
        """
        The tag of this list named by ``value`` (any case, spaces around ignored), whether Meta
        still allows it or not; :func:`validate_message_tag` says whether it may be sent.
        """
        if isinstance(value, MessageTag):
            return value
        if isinstance(value, str):
            try:
                return cls(value.strip().upper())
            except ValueError:
                pass
        names = ", ".join(tag.value for tag in cls)
        raise AhaChatValidationError(f"{field}: {value!r} is not a message tag; use one of {names}")


_RETIRED_IN_2026 = "Meta retired it on 27 April 2026 (announced 10 February 2026)"
#: Why each tag Meta no longer allows is refused, as errors say it.
RETIRED_MESSAGE_TAGS: Mapping[str, str] = MappingProxyType(
    {
        MessageTag.CONFIRMED_EVENT_UPDATE.value: _RETIRED_IN_2026,
        MessageTag.POST_PURCHASE_UPDATE.value: _RETIRED_IN_2026,
        MessageTag.ACCOUNT_UPDATE.value: _RETIRED_IN_2026,
        MessageTag.NON_PROMOTIONAL_SUBSCRIPTION.value: (
            "Meta has allowed it only for pages in its News Page Index since 4 March 2020"
        ),
    }
)
#: The tags Meta allows any page (with the permission each needs), when a connection names none.
ALLOWED_MESSAGE_TAGS = frozenset({MessageTag.HUMAN_AGENT.value})
#: What to do instead of a refused tag, as errors say it.
INSTEAD_OF_A_TAG = (
    "send without a tag (the default) to customers who wrote in the last 24 hours; a person's reply "
    "within 7 days may carry HUMAN_AGENT; outside the window Meta allows only its utility messages, "
    "which AhaChat's API does not offer (README, \"Messenger's rules\"). A page that may still use the "
    "tag names it in its connection's extra fields message_tags and default_message_tag"
)
_TAG_NAME = re.compile(r"[A-Z][A-Z0-9_]*")
#: What marks a string as a Jinja template, which is rendered (and so checked) only when the task runs.
TEMPLATE_MARKERS = ("{{", "{%", "{#")


def _tag_name(value: Any, field: str) -> str:
    """``value`` as a tag name, upper case; a name that cannot be a tag's is refused."""
    if isinstance(value, MessageTag):
        return value.value
    name = value.strip().upper() if isinstance(value, str) else None
    if name is None or not _TAG_NAME.fullmatch(name):
        raise AhaChatValidationError(
            f"{field}: {value!r} is not a message tag (a name such as HUMAN_AGENT: letters, digits and _)"
        )
    return name


def validate_message_tag(
    value: Any, field: str = "message_tag", *, allowed: Iterable[str] | None = None
) -> str | None:
    """
    The message tag to send for ``value``, upper case, or None for no tag (``None`` or ``""``).

    :param allowed: the tags the page may use, from its connection (:class:`MessageTagRule`);
        None for Meta's rule as of December 2026: ``HUMAN_AGENT`` only.
    :raises AhaChatValidationError: for a tag Meta retired (saying when, and what to do instead),
        one the connection does not list, or a name that is no tag.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    name = _tag_name(value, field)
    names = ALLOWED_MESSAGE_TAGS if allowed is None else frozenset(allowed)
    if name in names:
        return name
    if name in RETIRED_MESSAGE_TAGS:
        raise AhaChatValidationError(
            f"{field}: Messenger refuses the message tag {name}: {RETIRED_MESSAGE_TAGS[name]}. Instead, "
            f"{INSTEAD_OF_A_TAG}"
        )
    if allowed is not None:
        listed = ", ".join(sorted(names)) or "none"
        raise AhaChatValidationError(
            f"{field}: {name} is not among the tags the connection's message_tags allow ({listed})"
        )
    raise AhaChatValidationError(
        f"{field}: {value!r} is not a message tag Messenger accepts; use HUMAN_AGENT (a person's reply "
        "within 7 days) or no tag. A tag Meta allows your page that the provider does not know can "
        "be named in the connection's extra message_tags"
    )


def literal_message_tag(value: MessageTag | str | None, field: str = "message_tag") -> str | None:
    """
    A ``message_tag`` argument as operators and notifiers keep it until it is rendered: checked now,
    when the DAG is parsed, if it is a literal (a tag Meta retired, or no tag name at all, fails
    here); a template, or a name only a connection can allow, is checked when the task runs.
    """
    if value is None or (isinstance(value, str) and any(marker in value for marker in TEMPLATE_MARKERS)):
        return value
    if isinstance(value, str) and not value.strip():
        return None
    name = _tag_name(value, field)
    if name in RETIRED_MESSAGE_TAGS:
        validate_message_tag(name, field)  # raises, saying why
    return name


@dataclass(frozen=True)
class MessageTagRule:
    """
    Which message tags one connection may send, and the tag a message carries when it names none.

    :param allowed: the tags the page may use (the connection's extra ``message_tags``); None for
        Meta's rule as of December 2026 (:data:`ALLOWED_MESSAGE_TAGS`).
    :param default: the tag of a message that names none (the extra ``default_message_tag``);
        None sends no tag.
    """

    allowed: frozenset[str] | None = None
    default: str | None = None

    @classmethod
    def of(cls, message_tags: Any = None, default_message_tag: Any = None) -> MessageTagRule:
        """
        The rule a connection's extra fields give, checked: ``message_tags`` a list (or a JSON list,
        or names separated by commas), ``default_message_tag`` one of the tags allowed.

        :raises AhaChatValidationError: naming the field and the rule.
        """
        allowed = None
        if message_tags not in (None, "", []):
            listed = message_tags
            if isinstance(listed, str) and listed.lstrip().startswith("["):
                listed = load_json(listed, "message_tags")
            if isinstance(listed, str):
                listed = [part for part in listed.split(",") if part.strip()]
            if not isinstance(listed, list | tuple | set | frozenset):
                raise AhaChatValidationError(
                    f'message_tags: must be a list of tag names, such as ["HUMAN_AGENT"], got {_kind(listed)}'
                )
            allowed = frozenset(each_checked(listed, _tag_name, "message_tags"))
        return cls(allowed, validate_message_tag(default_message_tag, "default_message_tag", allowed=allowed))

    def check(self, value: Any, field: str = "message_tag") -> str | None:
        """The tag a message carries for ``value`` (None: the default); see :func:`validate_message_tag`."""
        if value is None or (isinstance(value, str) and not value.strip()):
            return self.default
        return validate_message_tag(value, field, allowed=self.allowed)


#: What a task does about a customer Messenger will not let the bot message now (they last wrote
#: more than 24 hours ago, or Meta says they are not available), by ``outside_window``. One place,
#: so that a new choice is one more entry here.
OUTSIDE_WINDOW_CHOICES: Mapping[str, str] = MappingProxyType(
    {
        "fail": "a single send fails the task (AhaChatOutsideWindowError, without Airflow's retries); "
        "in a run for many they count against max_failures and max_failure_ratio",
        "skip": "a single send skips the task; in a run for many they are reported as outside_window "
        "and do not count against the failure limits",
        "hold": "the message is held for the customer (for hold_for, 7 days by default) and shown to "
        "them in the answer to their next call of the bot's JSON API block; a single send succeeds "
        "saying it was held, a run for many reports them as held, not counted as failures",
    }
)
#: ``outside_window`` when not given: a single customer fails the task, a run for many goes on.
OUTSIDE_WINDOW_SINGLE_DEFAULT = "fail"
OUTSIDE_WINDOW_BULK_DEFAULT = "skip"


def validate_outside_window(value: Any, field: str = "outside_window") -> str | None:
    """``value`` if it is one of :data:`OUTSIDE_WINDOW_CHOICES` (or None, the default)."""
    if value is None or value in OUTSIDE_WINDOW_CHOICES:
        return value
    choices = ", ".join(f'"{choice}"' for choice in OUTSIDE_WINDOW_CHOICES)
    raise AhaChatValidationError(f"{field}: must be one of {choices}, got {value!r}")


def validate_user_id(value: Any, field: str = "user_id") -> str:
    """
    Return a messenger_user_id as a string of digits.

    Integers are accepted and turned into strings; floats are refused because a 16-digit ID
    loses its last digits as a float.
    """
    if isinstance(value, bool) or value is None:
        raise AhaChatValidationError(f"{field}: must be a string of digits, got {_kind(value)}")
    if isinstance(value, int):
        value = str(value)
    if isinstance(value, float):
        raise AhaChatValidationError(
            f"{field}: must be a string of digits, got the float {value!r}; 16-digit IDs lose "
            "precision as floats, so keep IDs as strings end to end"
        )
    if not isinstance(value, str):
        raise AhaChatValidationError(f"{field}: must be a string of digits, got {_kind(value)}")
    text = value.strip()
    if not text:
        raise AhaChatValidationError(f"{field}: must not be empty")
    if not _DIGITS.fullmatch(text):
        raise AhaChatValidationError(f"{field}: must be a string of digits, got {value!r}")
    return text


#: The country a phone number without its country code is taken to be in: Vietnam. A connection
#: changes it with the extra field ``default_country_code``.
DEFAULT_COUNTRY_CODE = "84"

_COUNTRY_CODE = re.compile(r"[1-9][0-9]{0,2}")


def validate_country_code(value: Any, field: str = "default_country_code") -> str:
    """A country calling code: 1 to 3 digits, not starting with 0 (``84``; a leading ``+`` is dropped)."""
    text = str(value).strip().removeprefix("+") if isinstance(value, str | int) else None
    if text is None or isinstance(value, bool) or not _COUNTRY_CODE.fullmatch(text):
        raise AhaChatValidationError(
            f"{field}: must be a country calling code of 1 to 3 digits, got {value!r}"
        )
    return text


def normalize_phone(value: Any, field: str = "phone", country_code: str = DEFAULT_COUNTRY_CODE) -> str:
    """
    A phone number in its one canonical form, E.164 (``+84908071111``), so that one customer is one
    number however it was written.

    Spaces, dots and dashes are removed, then an optional ``+`` (or ``00``) and 9 to 15 digits are
    required. A number with ``+`` or ``00`` has its country code; one with a leading ``0`` is a
    national number of ``country_code`` (the trunk ``0`` is dropped); one that starts with
    ``country_code`` and is long enough has it already, without the ``+``; any other is a national
    number without its ``0``. ``+84908071111``, ``0908 071 111``, ``84908071111`` and
    ``908071111`` are all ``+84908071111``.

    :param country_code: the country of numbers written without a country code (Vietnam, ``84``).
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise AhaChatValidationError(
            f"{field}: got the number {value!r}; a phone as a number loses its leading 0 "
            "(0908071111 becomes 908071111), so pass it as a string"
        )
    if not isinstance(value, str):
        raise AhaChatValidationError(f"{field}: must be a string, got {_kind(value)}")
    text = _PHONE_SEPARATORS.sub("", value)
    if text.startswith("00"):
        text = "+" + text[2:]
    if not _PHONE.fullmatch(text):
        raise AhaChatValidationError(
            f"{field}: {value!r} is not a phone number (after removing spaces, dots and dashes it must "
            "be an optional + and 9 to 15 digits)"
        )
    if text.startswith("+"):
        digits = text[1:]
    elif text.startswith("0"):
        digits = country_code + text[1:]
    elif text.startswith(country_code) and len(text) - len(country_code) >= 8:
        digits = text
    else:
        digits = country_code + text
    if len(digits) > 15:
        raise AhaChatValidationError(
            f"{field}: {value!r} is not a phone number (with the country code {country_code} it has "
            f"{len(digits)} digits; E.164 allows 15)"
        )
    return "+" + digits


def validate_block_name(value: Any, field: str = "block_name") -> str:
    """Return a non-empty block name."""
    if not isinstance(value, str) or not value.strip():
        raise AhaChatValidationError(f"{field}: must be a non-empty string, got {value!r}")
    return value.strip()


def validate_text(value: Any, field: str = "text", limit: int = MAX_TEXT) -> str:
    """Return a non-empty text of at most ``limit`` characters."""
    if not isinstance(value, str):
        raise AhaChatValidationError(f"{field}: must be a string, got {_kind(value)}")
    if not value.strip():
        raise AhaChatValidationError(f"{field}: must not be empty")
    if len(value) > limit:
        raise AhaChatValidationError(f"{field}: at most {limit} characters, got {len(value)}")
    return value


def _string_list(value: Any, field: str, what: str) -> list[str]:
    value = load_json(value, field) if isinstance(value, str) and value.lstrip().startswith("[") else value
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, Iterable) or isinstance(value, Mapping | bytes):
        raise AhaChatValidationError(f"{field}: must be a list of {what}s, got {_kind(value)}")
    items = list(value)
    if not items:
        raise AhaChatValidationError(f"{field}: must name at least one {what}")
    result: list[str] = []
    for index, item in enumerate(items):
        if not isinstance(item, str) or not item.strip():
            raise AhaChatValidationError(
                f"{field}[{index}]: a {what} must be a non-empty string, got {item!r}"
            )
        if item.strip() not in result:
            result.append(item.strip())
    return result


def validate_tags(value: Any, field: str = "tags") -> list[str]:
    """Return one or more non-empty tags; a single string is one tag, a JSON list string is parsed."""
    return _string_list(value, field, "tag")


def validate_attribute_names(value: Any, field: str = "attributes") -> list[str]:
    """
    Return one or more attribute names to reset.

    The names go in a JSON body, so ``phone`` is an ordinary name here; ``ahachat_*`` names are not.
    """
    value = load_json(value, field) if isinstance(value, str) and value.lstrip().startswith("[") else value
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, Iterable) or isinstance(value, Mapping | bytes):
        raise AhaChatValidationError(f"{field}: must be a list of attribute names, got {_kind(value)}")
    names: list[str] = []
    problems: list[str] = []
    for index, name in enumerate(value):
        problem = attribute_name_problem(name)
        if problem:
            problems.append(f"{field}[{index}]: {problem}")
        elif name not in names:
            names.append(name)
    if problems:
        raise AhaChatValidationError(problems)
    if not names:
        raise AhaChatValidationError(f"{field}: must name at least one attribute name")
    return names


def php_query_key(name: str) -> str:
    """
    The key under which PHP's query parser (``$_GET``, ``parse_str``) files the parameter ``name``.

    PHP cuts a name at a NUL byte, drops its leading spaces, turns spaces and dots into ``_``, and
    reads ``name[...]`` as the array ``name``; a ``[`` never closed becomes ``_`` and the rest of
    the name is kept as it is. So ``ahachat_token[]``, ``ahachat.token`` and ``ahachat token`` all
    reach AhaChat as ``ahachat_token``.
    """
    name = name.split("\0", 1)[0].lstrip(" ")
    key: list[str] = []
    for index, char in enumerate(name):
        if char == "[":
            if "]" in name[index + 1 :]:
                break
            key.append("_" + name[index + 1 :])
            break
        key.append("_" if char in " ." else char)
    return "".join(key)


def attribute_name_problem(name: Any, *, by_phone: bool = False) -> str | None:
    """
    Why ``name`` cannot be an attribute's name, or None if it can.

    Refused: names that are not strings, empty or with leading or trailing spaces, every name
    AhaChat reads as one of its own ``ahachat_*`` parameters (in any case, and as PHP parses a
    query: ``ahachat_token[]``, ``ahachat.token``), and, when ``by_phone`` (the Broadcast API's
    by-phone form), every name read as ``phone``. Elsewhere ``phone`` is an ordinary attribute.
    """
    if not isinstance(name, str) or not name.strip():
        return f"attribute names must be non-empty strings, got {name!r}"
    if name != name.strip():
        return f"attribute name {name!r} has leading or trailing spaces"
    key = php_query_key(name)
    read_as = f" (a PHP query parser reads {name!r} as {key!r})" if key != name else ""
    if key.lower().startswith(RESERVED_PREFIX):
        return (
            f"attribute name {name!r} is reserved by the Broadcast API: every name starting with "
            f"{RESERVED_PREFIX!r}, in any case, is AhaChat's own{read_as}"
        )
    if by_phone and key.lower() == "phone":
        return (
            f"attribute name {name!r} is reserved by the Broadcast API: in the by-phone form, phone "
            f"(in any case) is the customer's phone number{read_as}"
        )
    return None


def validate_attributes(
    value: Any, field: str = "attributes", *, allow_empty: bool = False, by_phone: bool = False
) -> dict[str, WireValue]:
    """
    Return attributes as a dict of name to the value AhaChat is sent (see :func:`attribute_value`).

    Accepts a mapping or a JSON object string. Names must pass :func:`attribute_name_problem`
    (``phone`` is refused only when ``by_phone``); ``null`` and non-finite numbers are refused.
    Every problem is reported, each naming its attribute.
    """
    value = load_json(value, field)
    if value is None and allow_empty:
        return {}
    if not isinstance(value, Mapping):
        raise AhaChatValidationError(f"{field}: must be an object of name to value, got {_kind(value)}")
    if not value and not allow_empty:
        raise AhaChatValidationError(f"{field}: must set at least one attribute")
    result: dict[str, WireValue] = {}
    problems: list[str] = []
    for name, item in value.items():
        where = f"{field}.{name}" if isinstance(name, str) and name.strip() else field
        problem = attribute_name_problem(name, by_phone=by_phone)
        if problem is None:
            try:
                result[name] = attribute_value(item, where)
            except AhaChatValidationError as err:
                problems.extend(err.problems)
        else:
            problems.append(f"{where}: {problem}")
    if problems:
        raise AhaChatValidationError(problems)
    return result


def _plain_number(number: Decimal) -> str:
    """``number`` in plain notation, as it reads: no exponent, no trailing zeros after the point."""
    return "0" if number == 0 else format(number.normalize(), "f")


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.strftime(DATETIME_FORMAT)
    if isinstance(value, date):
        return value.strftime(DATE_FORMAT)
    if isinstance(value, Decimal):
        return attribute_value(value)
    raise TypeError(f"{type(value).__name__} cannot be written as JSON")


def _number_value(value: float | Decimal, field: str) -> int | float | str:
    """A float or a ``Decimal`` as it reads (see :func:`attribute_value`)."""
    if not (value.is_finite() if isinstance(value, Decimal) else math.isfinite(value)):
        raise AhaChatValidationError(f"{field}: must be a finite number, got {value!r}")
    exact = Decimal(repr(value)) if isinstance(value, float) else value
    if exact == exact.to_integral_value():
        return int(exact)
    text = _plain_number(exact)
    as_float = float(text)
    return as_float if Decimal(repr(as_float)) == Decimal(text) else text


def attribute_value(value: Any, field: str = "attribute") -> WireValue:
    """
    Convert an attribute value to AhaChat's attribute types; the same on every path.

    - ``str``: as it is (text).
    - ``bool``: ``"yes"`` or ``"no"`` (AhaChat's yes/no type).
    - ``int``: as it is; a ``float`` or ``Decimal`` as it reads: ``1.0`` is ``1``, ``0.1`` is ``0.1``,
      a ``Decimal`` exactly (``Decimal("19.90")`` is ``19.9``; one a float cannot hold exactly
      is sent as its text). NaN and infinities are refused.
    - ``datetime.datetime`` (and pendulum's): ``"dd/mm/yyyy HH:MM:SS"``, the wall-clock time it
      holds, without converting its time zone; ``datetime.date``: ``"dd/mm/yyyy"``.
    - ``list`` and ``dict``: their JSON text (dates and decimals inside written as above).

    :raises AhaChatValidationError: for ``None`` and any other type, naming ``field``.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return YES if value else NO
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float | Decimal):
        return _number_value(value, field)
    if isinstance(value, datetime):
        return value.strftime(DATETIME_FORMAT)
    if isinstance(value, date):
        return value.strftime(DATE_FORMAT)
    if isinstance(value, list | tuple | Mapping):
        try:
            return json.dumps(
                value, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_json_default
            )
        except (TypeError, ValueError) as err:
            raise AhaChatValidationError(f"{field}: cannot be written as JSON ({err})") from None
    raise AhaChatValidationError(
        f"{field}: values must be text, numbers, booleans, dates, datetimes, lists or objects, "
        f"got {_kind(value)}"
    )


def attribute_query_value(value: Any) -> str:
    """Write an attribute value as text, as the Broadcast API's query string carries it."""
    wire = attribute_value(value)
    if isinstance(wire, float):
        return _plain_number(Decimal(repr(wire)))
    return str(wire)


# --------------------------------------------------------------------------- recipients and users


class Recipient(BaseModel):
    """
    One customer to act on: by ``user_id`` (messenger_user_id) or by ``phone``, exactly one.

    :param user_id: the messenger_user_id, a string of digits.
    :param phone: the phone number, in E.164 (see :func:`normalize_phone`).
    """

    model_config = ConfigDict(frozen=True)

    user_id: str | None = None
    phone: str | None = None

    @classmethod
    def of(
        cls, user_id: Any = None, phone: Any = None, *, country_code: str = DEFAULT_COUNTRY_CODE
    ) -> Recipient:
        """
        Validate and build a recipient; exactly one of the two must be given.

        :param country_code: the country of a phone written without its country code.
        """
        has_user = user_id not in (None, "")
        has_phone = phone not in (None, "")
        if has_user == has_phone:
            raise AhaChatValidationError(
                "user_id, phone: give exactly one of them" + (" (both were given)" if has_user else "")
            )
        if has_user:
            return cls(user_id=validate_user_id(user_id))
        return cls(phone=normalize_phone(phone, country_code=country_code))

    def describe(self) -> str:
        """``user 123`` or ``phone +84...``, for messages."""
        return f"user {self.user_id}" if self.user_id else f"phone {self.phone}"


class User(BaseModel):
    """A customer of the bot, as AhaChat describes them. Unknown fields are kept."""

    model_config = ConfigDict(extra="allow")

    messenger_user_id: str
    first_name: str | None = None
    last_name: str | None = None
    gender: str | None = None
    locale: str | None = None
    profile_pic_url: str | None = None
    phone: str | None = None
    email: str | None = None
    tags: list[str] = Field(default_factory=list)
    attributes: dict[str, Any] = Field(default_factory=dict)
    last_interaction_at: datetime | None = None
    subscribed: bool = True

    @field_validator("messenger_user_id", mode="before")
    @classmethod
    def _id_as_string(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class SendResult(BaseModel):
    """
    What one action did, for XCom.

    :param action: the action's name, such as ``add_tags`` or ``broadcast_block``.
    :param user_id: the user acted on, when addressed by ID.
    :param phone: the phone acted on, when addressed by phone.
    :param data: AhaChat's ``data`` answer, if any.
    """

    action: str
    user_id: str | None = None
    phone: str | None = None
    data: Any = None


# --------------------------------------------------------------------------- dynamic messages


class _Checker:
    """Walks a dynamic message and collects every problem, each naming its field."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def fail(self, path: str, rule: str) -> None:
        self.problems.append(f"{path}: {rule}")

    def obj(self, value: Any, path: str, allowed: Iterable[str] | None = None) -> Mapping[str, Any] | None:
        if not isinstance(value, Mapping):
            self.fail(path, f"must be an object, got {_kind(value)}")
            return None
        if allowed is not None:
            allowed = tuple(allowed)
            for key in value:
                if key not in allowed:
                    self.fail(f"{path}.{key}", f"unknown field; expected one of {', '.join(allowed)}")
        return value

    def text(self, value: Any, path: str, limit: int, required: bool = True) -> None:
        if value is None and not required:
            return
        if not isinstance(value, str) or not value.strip():
            self.fail(path, f"must be a non-empty string, got {value!r}")
        elif len(value) > limit:
            self.fail(path, f"at most {limit} characters, got {len(value)}")

    def items(self, value: Any, path: str, most: int | None, least: int = 1) -> list[Any]:
        if not isinstance(value, list):
            self.fail(path, f"must be a list, got {_kind(value)}")
            return []
        if len(value) < least:
            self.fail(path, f"at least {least}")
        if most is not None and len(value) > most:
            self.fail(path, f"at most {most}, got {len(value)}")
        return value

    def url(self, value: Any, path: str, https_only: bool) -> str | None:
        schemes = ("https",) if https_only else ("http", "https")
        if isinstance(value, str):
            parts = urlsplit(value.strip())
            if parts.scheme in schemes and parts.netloc:
                return parts.path
        self.fail(path, f"must be an {' or '.join(schemes)} URL, got {value!r}")
        return None

    def number(self, value: Any, path: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(path, f"must be a number, got {_kind(value)}")

    # -- the format

    def extras(self, top: Mapping[str, Any]) -> dict[str, Any]:
        """A message's ``set_attributes`` and ``redirect_to_blocks``, checked, where they are given."""
        rules: dict[str, Callable[[Any], Any]] = {
            "set_attributes": lambda value: validate_attributes(value, "set_attributes"),
            "redirect_to_blocks": lambda value: _string_list(value, "redirect_to_blocks", "block name"),
        }
        extras: dict[str, Any] = {}
        for name, rule in rules.items():
            if top.get(name) is not None:
                try:
                    extras[name] = rule(top[name])
                except AhaChatValidationError as err:
                    self.problems.extend(err.problems)
        return extras

    def message(self, value: Any, path: str) -> None:
        msg = self.obj(value, path, ("text", "attachment", "quick_replies"))
        if msg is None:
            return
        if ("text" in msg) == ("attachment" in msg):
            self.fail(path, "must have exactly one of text, attachment")
        if "text" in msg:
            self.text(msg["text"], f"{path}.text", MAX_TEXT)
        if "attachment" in msg:
            self.attachment(msg["attachment"], f"{path}.attachment")
        if "quick_replies" in msg:
            for i, reply in enumerate(
                self.items(msg["quick_replies"], f"{path}.quick_replies", MAX_QUICK_REPLIES)
            ):
                where = f"{path}.quick_replies[{i}]"
                if self.obj(reply, where) is not None:
                    self.text(reply.get("title"), f"{where}.title", MAX_BUTTON_TITLE)
                    if reply.get("type") == "json_plugin_url":  # a reply that calls a URL, as a button can
                        self.url(reply.get("url"), f"{where}.url", https_only=False)
                    else:
                        self.text(reply.get("block_name"), f"{where}.block_name", 10_000)

    def attachment(self, value: Any, path: str) -> None:
        att = self.obj(value, path, ("type", "payload"))
        if att is None:
            return
        kind = att.get("type")
        payload = self.obj(att.get("payload"), f"{path}.payload")
        if kind in MEDIA_EXTENSIONS:
            if payload is not None:
                self.media(kind, payload, f"{path}.payload")
        elif kind == "template":
            if payload is not None:
                self.template(payload, f"{path}.payload")
        else:
            kinds = ", ".join([*MEDIA_EXTENSIONS, "template"])
            self.fail(f"{path}.type", f"must be one of {kinds}, got {kind!r}")

    def media(self, kind: str, payload: Mapping[str, Any], path: str) -> None:
        url_path = self.url(payload.get("url"), f"{path}.url", https_only=True)
        allowed = MEDIA_EXTENSIONS[kind]
        if url_path and allowed and "." in url_path.rsplit("/", 1)[-1]:
            ext = url_path.rsplit(".", 1)[-1].lower()
            if ext not in allowed:
                article = "an" if kind[0] in "aeiou" else "a"
                self.fail(f"{path}.url", f"{article} {kind} must be {', '.join(sorted(allowed))}, got .{ext}")

    def template(self, payload: Mapping[str, Any], path: str) -> None:
        kind = payload.get("template_type")
        if kind == "button":
            self.text(payload.get("text"), f"{path}.text", MAX_BUTTON_TEMPLATE_TEXT)
            self.buttons(payload.get("buttons"), f"{path}.buttons", least=1)
        elif kind == "generic":
            ratio = payload.get("image_aspect_ratio")
            if ratio is not None and ratio not in ("horizontal", "square"):
                self.fail(f"{path}.image_aspect_ratio", f"must be horizontal or square, got {ratio!r}")
            elements = self.items(payload.get("elements"), f"{path}.elements", MAX_GALLERY_ELEMENTS)
            for i, element in enumerate(elements):
                self.element(element, f"{path}.elements[{i}]")
        elif kind == "receipt":
            self.receipt(payload, path)
        else:
            self.fail(f"{path}.template_type", f"must be one of {', '.join(TEMPLATE_TYPES)}, got {kind!r}")

    def element(self, value: Any, path: str) -> None:
        element = self.obj(value, path)
        if element is None:
            return
        self.text(element.get("title"), f"{path}.title", MAX_ELEMENT_TITLE)
        self.text(element.get("subtitle"), f"{path}.subtitle", MAX_ELEMENT_TITLE, required=False)
        if element.get("image_url") is not None:
            self.url(element["image_url"], f"{path}.image_url", https_only=True)
        if "buttons" in element:
            self.buttons(element["buttons"], f"{path}.buttons", least=0)

    def buttons(self, value: Any, path: str, least: int) -> None:
        for i, button in enumerate(self.items(value, path, MAX_BUTTONS, least)):
            where = f"{path}[{i}]"
            if self.obj(button, where) is None:
                continue
            self.text(button.get("title"), f"{where}.title", MAX_BUTTON_TITLE)
            kind = button.get("type")
            if kind in ("web_url", "json_plugin_url"):
                self.url(button.get("url"), f"{where}.url", https_only=False)
            elif kind == "show_block":
                self.text(button.get("block_name"), f"{where}.block_name", 10_000)
            elif kind == "phone_number":
                number = button.get("phone_number")
                if not (isinstance(number, str) and number.startswith("+") and _PHONE.fullmatch(number)):
                    self.fail(f"{where}.phone_number", f"must be + and 9 to 15 digits, got {number!r}")
            else:
                self.fail(f"{where}.type", f"must be one of {', '.join(BUTTON_TYPES)}, got {kind!r}")

    def receipt(self, payload: Mapping[str, Any], path: str) -> None:
        for name in ("recipient_name", "order_number", "payment_method"):
            self.text(payload.get(name), f"{path}.{name}", 10_000)
        currency = payload.get("currency")
        if not (isinstance(currency, str) and re.fullmatch(r"[A-Z]{3}", currency)):
            self.fail(f"{path}.currency", f"must be a 3-letter ISO 4217 code such as VND, got {currency!r}")
        if "elements" in payload:
            for i, element in enumerate(self.items(payload["elements"], f"{path}.elements", None, 0)):
                where = f"{path}.elements[{i}]"
                if self.obj(element, where) is not None:
                    self.text(element.get("title"), f"{where}.title", MAX_ELEMENT_TITLE)
                    self.number(element.get("price"), f"{where}.price")
        summary = self.obj(payload.get("summary"), f"{path}.summary")
        if summary is not None:
            self.number(summary.get("total_cost"), f"{path}.summary.total_cost")


class DynamicMessage(BaseModel):
    """
    A message in AhaChat's "JSON API" format, checked against Messenger's limits.

    Build it with :meth:`parse`, which accepts the whole object, a list of messages, a single
    message, or any of these as a JSON string, and reports every problem with its field.

    :param messages: the messages, each a ``text`` or an ``attachment``, with optional ``quick_replies``.
    :param set_attributes: attributes to set on the user.
    :param redirect_to_blocks: blocks to start after the messages.
    """

    model_config = ConfigDict(frozen=True)

    messages: list[dict[str, Any]]
    set_attributes: dict[str, Any] | None = None
    redirect_to_blocks: list[str] | None = None

    @classmethod
    def parse(cls, value: Any, field: str = "message") -> DynamicMessage:
        """Validate ``value`` and return the message, or raise listing every problem."""
        if isinstance(value, DynamicMessage):
            return value
        value = load_json(value, field)
        if isinstance(value, list):
            value = {"messages": value}
        elif (
            isinstance(value, Mapping)
            and "messages" not in value
            and ("text" in value or "attachment" in value)
        ):
            value = {"messages": [value]}
        check = _Checker()
        top = check.obj(value, field, ("messages", "set_attributes", "redirect_to_blocks"))
        extras: dict[str, Any] = {}
        if top is not None:
            for i, message in enumerate(check.items(top.get("messages"), "messages", None)):
                check.message(message, f"messages[{i}]")
            extras = check.extras(top)
        if check.problems:
            raise AhaChatValidationError(check.problems)
        assert top is not None
        return cls(messages=[dict(m) for m in top["messages"]], **extras)

    @classmethod
    def text(cls, text: str, field: str = "text") -> DynamicMessage:
        """A message of one text."""
        return cls(messages=[{"text": validate_text(text, field)}])

    def to_payload(self) -> dict[str, Any]:
        """The JSON body AhaChat expects."""
        return self.model_dump(mode="json", exclude_none=True)
