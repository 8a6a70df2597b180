"""
What a client needs to reach one bot, validated once: :class:`ClientSettings`. No Airflow import here.

A client built in Python gets its settings from :meth:`ClientSettings.of`, which checks its
arguments; the hook gets them from a connection's fields through :func:`settings_from_connection`,
which names each problem as the connection form names its field. Either way the client takes them
as they are: nothing is checked twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from airflow_provider_ahachat.exceptions import AhaChatValidationError
from airflow_provider_ahachat.get_provider_info import CONN_FIELDS
from airflow_provider_ahachat.held.answer import ANSWER_KEYS, answer_keys
from airflow_provider_ahachat.models import DEFAULT_COUNTRY_CODE, MessageTagRule, validate_country_code
from airflow_provider_ahachat.registry import ENDPOINTS, endpoint_table
from airflow_provider_ahachat.request import Endpoint
from airflow_provider_ahachat.retry import RetryPolicy

DEFAULT_BASE_URL = "https://ahachat.com"
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 30.0


@dataclass(frozen=True)
class ClientSettings:
    """
    One bot's settings, as a client uses them.

    :param bot_id: the Bot ID, from the bot's settings in AhaChat.
    :param token: the Bot Token. It is sent in the query string and never logged or shown.
    :param base_url: where AhaChat is; ``https://ahachat.com`` unless testing against the sandbox.
    :param timeout: seconds to wait while opening a connection, and for an answer.
    :param retry: when to retry; see :class:`~airflow_provider_ahachat.retry.RetryPolicy`.
    :param endpoints: every endpoint's method and path, a connection's corrections applied.
    :param default_country_code: the country of phone numbers written without a country code.
    :param message_tag_rule: which message tags the bot's page may send, and the one a broadcast
        carries by default.
    :param answer_keys: the keys of the JSON API answer that carries held messages (provisional; a
        connection's extra ``answer_keys`` corrects them, as ``endpoints`` corrects the paths).
    """

    bot_id: str
    token: str = field(repr=False)
    base_url: str = DEFAULT_BASE_URL
    timeout: tuple[float, float] = (DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    endpoints: Mapping[str, Endpoint] = field(default_factory=lambda: ENDPOINTS)
    default_country_code: str = DEFAULT_COUNTRY_CODE
    message_tag_rule: MessageTagRule = field(default_factory=MessageTagRule)
    answer_keys: Mapping[str, str] = field(default_factory=lambda: ANSWER_KEYS)

    @classmethod
    def of(
        cls,
        bot_id: str | int,
        token: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        retry: RetryPolicy | None = None,
        endpoints: Any = None,
        default_country_code: Any = DEFAULT_COUNTRY_CODE,
        message_tags: Any = None,
        default_message_tag: Any = None,
    ) -> ClientSettings:
        """
        The settings these arguments give, checked; every problem is reported at once.

        :param endpoints: corrections of the provisional paths, endpoint name to ``"METHOD /path"``
            (a mapping or a JSON object string); see
            :func:`~airflow_provider_ahachat.registry.endpoint_table`.
        :param message_tags: the message tags the page may use, instead of Meta's rule as of December
            2026 (``HUMAN_AGENT`` only): a list, a JSON list or names separated by commas.
        :param default_message_tag: the tag of a broadcast that names none; none by default (a
            standard message, for customers inside the 24-hour window).
        :raises AhaChatValidationError: naming each argument and its rule.
        """
        bot_id = str(bot_id) if isinstance(bot_id, int) else bot_id
        problems = []
        if not isinstance(bot_id, str) or not bot_id.strip():
            problems.append("bot_id: the Bot ID must not be empty")
        if not isinstance(token, str) or not token.strip():
            problems.append("token: the Bot Token must not be empty")
        base = base_url.strip().rstrip("/")
        if urlsplit(base).scheme not in ("http", "https") or not urlsplit(base).netloc:
            problems.append(f"base_url: must be an http or https URL, got {base_url!r}")
        checked = checked_extras(endpoints, message_tags, default_message_tag, default_country_code, problems)
        if problems:
            raise AhaChatValidationError(problems)
        return cls(
            bot_id=bot_id.strip(),
            token=token.strip(),
            base_url=base,
            timeout=(float(connect_timeout), float(read_timeout)),
            retry=retry or RetryPolicy(),
            **checked,
        )


def checked_extras(
    endpoints: Any,
    message_tags: Any,
    default_message_tag: Any,
    default_country_code: Any,
    problems: list[str],
    prefix: str = "",
    keys: Any = None,
) -> dict[str, Any]:
    """
    The endpoints table, the message tag rule, the country code and the answer's keys these values
    give, checked; each problem is added to ``problems``, its field named after ``prefix``
    (``"extra field "``).
    """
    checked: dict[str, Any] = {}
    try:
        checked["endpoints"] = endpoint_table(endpoints, f"{prefix}endpoints")
    except AhaChatValidationError as err:
        problems.extend(err.problems)
    try:
        checked["message_tag_rule"] = MessageTagRule.of(message_tags, default_message_tag)
    except AhaChatValidationError as err:
        problems.extend(prefix + problem for problem in err.problems)
    country = DEFAULT_COUNTRY_CODE if default_country_code in (None, "") else default_country_code
    try:
        checked["default_country_code"] = validate_country_code(country, f"{prefix}default_country_code")
    except AhaChatValidationError as err:
        problems.extend(err.problems)
    try:
        checked["answer_keys"] = answer_keys(keys, f"{prefix}answer_keys")
    except AhaChatValidationError as err:
        problems.extend(err.problems)
    return checked


# --------------------------------------------------------------------------- from a connection's fields


def base_url_from_connection(
    host: str | None, port: int | None, schema: str | None, base_url: str | None = None
) -> str:
    """
    The base URL a connection names.

    ``base_url`` (the form's Base URL, kept in the extra field ``base_url``) wins when it is set.
    Otherwise the address is read as Airflow's HTTP connection reads it: ``host`` may carry its own
    scheme (``http://127.0.0.1:8790``), else ``schema`` is the scheme (default ``https``), and
    ``port`` is added when the host has none. Neither means the real service, ``https://ahachat.com``.
    """
    base_url = (base_url or "").strip().rstrip("/")
    if base_url:
        return base_url
    host = (host or "").strip().rstrip("/")
    if not host:
        return DEFAULT_BASE_URL
    if "://" not in host:
        host = f"{(schema or '').strip() or 'https'}://{host}"
    parts = urlsplit(host)
    if port and parts.port is None:
        parts = parts._replace(netloc=f"{parts.netloc}:{port}")
    return urlunsplit(parts)


def extra_value(extra: Mapping[str, Any], name: str) -> Any:
    """An extra field of an ``ahachat`` connection, under its name or the older ``extra__ahachat__`` one."""
    return extra.get(name, extra.get(f"extra__ahachat__{name}"))


def extra_number(
    extra: Mapping[str, Any], name: str, default: float, *, whole: bool = False, zero: bool = False
) -> float:
    """
    An extra field's number: above 0 (or 0 too when ``zero``), or a whole number of at least 0.

    :raises AhaChatValidationError: naming the field as the connection form labels it.
    """
    value = extra_value(extra, name)
    if value in (None, ""):
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    valid = number >= 0 and number.is_integer() if whole else number >= 0 if zero else number > 0
    if not valid:
        rule = (
            "a whole number, 0 or more" if whole else "0 or more" if zero else "a number of seconds above 0"
        )
        label = CONN_FIELDS.get(name, {}).get("label")
        field_name = f"{label} (extra field {name!r})" if label else f"extra field {name!r}"
        raise AhaChatValidationError(f"{field_name} must be {rule}, got {value!r}")
    return number


def _identity_problems(bot_id: str, token: str) -> list[str]:
    problems = []
    if not bot_id:
        problems.append("Bot ID (login) is empty: copy it from the bot's Settings in AhaChat")
    elif not bot_id.isdigit():
        problems.append(
            f"Bot ID (login) must be digits only, as in the bot's Settings in AhaChat "
            f"(e.g. 12404829), got {bot_id[:40]!r}"
        )
    if not token:
        problems.append("Bot Token (password) is empty: copy it from the bot's Settings in AhaChat")
    return problems


def _numbers(extra: Mapping[str, Any], problems: list[str]) -> dict[str, float]:
    numbers: dict[str, float] = {}
    for name, default, whole in (
        ("connect_timeout", DEFAULT_CONNECT_TIMEOUT, False),
        ("timeout", DEFAULT_READ_TIMEOUT, False),
        ("max_retries", float(RetryPolicy.max_retries), True),
    ):
        try:
            numbers[name] = extra_number(extra, name, default, whole=whole)
        except AhaChatValidationError as err:
            problems.extend(err.problems)
    return numbers


def settings_from_connection(
    login: str | None,
    password: str | None,
    host: str | None = None,
    port: int | None = None,
    schema: str | None = None,
    extra: Mapping[str, Any] | None = None,
    *,
    max_retries: int | None = None,
    retry_unknown_outcome: bool = False,
) -> ClientSettings:
    """
    The settings an ``ahachat`` connection's fields give, checked: the Bot ID (``login``), the token
    (``password``), the address, the timeouts and retries, the corrected endpoints, the message tags
    and the country code. Every problem is reported at once, named by its field in the connection form.

    :param max_retries: retries of one request, instead of the connection's ``max_retries``.
    :param retry_unknown_outcome: retry message-sending requests whose outcome is unknown.
    :raises AhaChatValidationError: when a field is missing or not of its form.
    """
    extra = extra or {}
    bot_id, token = (login or "").strip(), (password or "").strip()
    problems = _identity_problems(bot_id, token)
    given = extra_value(extra, "base_url")
    base_url = base_url_from_connection(host, port, schema, None if given in (None, "") else str(given))
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        field_name = "Base URL (extra field 'base_url')" if given else "The address (host, port, schema)"
        problems.append(
            f"{field_name} must make an http or https URL such as http://127.0.0.1:8790, or be empty "
            f"for the real service; got {base_url[:80]!r}"
        )
    numbers = _numbers(extra, problems)
    checked = checked_extras(
        extra_value(extra, "endpoints"),
        extra_value(extra, "message_tags"),
        extra_value(extra, "default_message_tag"),
        extra_value(extra, "default_country_code"),
        problems,
        prefix="extra field ",
        keys=extra_value(extra, "answer_keys"),
    )
    if problems:
        raise AhaChatValidationError(problems)
    retries = max_retries if max_retries is not None else int(numbers["max_retries"])
    return ClientSettings(
        bot_id=bot_id,
        token=token,
        base_url=base_url,
        timeout=(numbers["connect_timeout"], numbers["timeout"]),
        retry=RetryPolicy(max_retries=retries, retry_unknown_outcome=retry_unknown_outcome),
        **checked,
    )
