"""The Airflow side of AhaChat: turns an ``ahachat`` connection into an :class:`AhaChatClient`."""

from __future__ import annotations

import math
import pathlib
from collections.abc import Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from airflow.sdk import BaseHook

from airflow_provider_ahachat.conditions import UNKNOWN_BOT
from airflow_provider_ahachat.exceptions import (
    AhaChatAuthError,
    AhaChatConnectionError,
    AhaChatError,
    AhaChatNotFoundError,
    AhaChatTimeoutError,
    AhaChatValidationError,
)
from airflow_provider_ahachat.get_provider_info import (
    CONN_FIELDS,
    DEFAULT_CONCURRENCY,
    DEFAULT_RATE_LIMIT,
    UI_FIELD_BEHAVIOUR,
)

if TYPE_CHECKING:
    from airflow.sdk import Connection

    from airflow_provider_ahachat.bulk import BulkRunner, Ledger
    from airflow_provider_ahachat.client import AhaChatClient, AsyncAhaChatClient

#: What a refused token means, in words a person can act on.
REFUSED_TOKEN = (
    "AhaChat refused the Bot Token for this Bot ID. Copy both again from the bot's Settings in AhaChat "
    "(the token changes whenever it is reset)."
)

#: The connection Test makes one attempt with at most these timeouts (seconds), so that it answers
#: within about 3 seconds when AhaChat cannot be reached, instead of retrying as a task would.
TEST_CONNECT_TIMEOUT = 2.0
TEST_READ_TIMEOUT = 2.5


def default_concurrency(rate_limit: float | None) -> int:
    """
    Requests in flight when nobody says: enough for ``rate_limit`` at 200 ms a request, at least 16.

    The pace cannot pass ``concurrency / latency``: 16 in flight at 100 ms give 160 requests/s at most.
    """
    if not rate_limit:
        return DEFAULT_CONCURRENCY
    return max(DEFAULT_CONCURRENCY, min(256, math.ceil(rate_limit * 0.2)))


def ledger_root(ledger_path: Any = None) -> Any:
    """
    The root of the delivery ledger: ``ledger_path`` (a local folder, an object storage URL or an
    ``ObjectStoragePath``), else ``[ahachat] ledger_path`` from Airflow's configuration, else
    ``$AIRFLOW_HOME/ahachat/ledger``.
    """
    from airflow_provider_ahachat.version_compat import airflow_home, conf, object_storage_path

    if ledger_path in (None, ""):
        ledger_path = conf().get("ahachat", "ledger_path", fallback=None) or str(
            airflow_home() / "ahachat" / "ledger"
        )
    if not isinstance(ledger_path, str):
        return ledger_path
    if "://" in ledger_path:
        return object_storage_path(ledger_path)
    return pathlib.Path(ledger_path).expanduser()


#: Seconds a ledger lease on object storage lasts unless renewed, when ``[ahachat] ledger_lease_seconds``
#: does not say otherwise.
DEFAULT_LEDGER_LEASE_SECONDS = 60.0


def ledger_lease_seconds() -> float:
    """
    How long a ledger lease on object storage lasts unless renewed: ``[ahachat] ledger_lease_seconds``
    (at least 5), else 60. A retry on another worker waits at most this long after a worker was lost.
    """
    from airflow_provider_ahachat.version_compat import conf

    raw = conf().get("ahachat", "ledger_lease_seconds", fallback=None)
    if raw in (None, ""):
        return DEFAULT_LEDGER_LEASE_SECONDS
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 5 <= seconds <= 3600:
        raise AhaChatValidationError(
            f"[ahachat] ledger_lease_seconds: must be seconds from 5 to 3600, got {raw!r}"
        )
    return seconds


def ledger_folder(ledger_path: Any, *, dag_id: str, run_id: str, task_id: str, map_index: int | None) -> Any:
    """The ledger folder of one task instance, under :func:`ledger_root` of ``ledger_path``."""
    from airflow_provider_ahachat.bulk.ledger import task_folder

    return task_folder(
        ledger_root(ledger_path), dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=map_index
    )


def __getattr__(name: str) -> Any:
    # Names that moved to the bulk package, kept importable from here without loading it at parse time.
    if name in ("open_recipients", "RECIPIENT_FILE_SUFFIXES"):
        from airflow_provider_ahachat.bulk import recipients

        return getattr(recipients, name)
    raise AttributeError(name)


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
        from airflow_provider_ahachat.client import DEFAULT_BASE_URL

        return DEFAULT_BASE_URL
    if "://" not in host:
        host = f"{(schema or '').strip() or 'https'}://{host}"
    parts = urlsplit(host)
    if port and parts.port is None:
        parts = parts._replace(netloc=f"{parts.netloc}:{port}")
    return urlunsplit(parts)


class AhaChatHook(BaseHook):
    """
    Interact with an AhaChat bot.

    The connection holds the Bot ID in ``login`` and the Bot Token in ``password``, both from the
    bot's settings in AhaChat. ``host`` (with ``port`` and ``schema``) points elsewhere than
    ``https://ahachat.com``, for example at the local sandbox. Extra fields: ``timeout`` (read
    timeout, seconds), ``connect_timeout``, ``max_retries``, ``rate_limit``, ``concurrency``,
    ``default_country_code`` (the country of phone numbers written without one; ``84``, Vietnam, by
    default), ``endpoints``, a JSON object that corrects any endpoint's method and path
    (``{"add_tags": "POST /api/bots/{bot_id}/users/{user_id}/tags"}``), ``message_tags``, the
    message tags the bot's page may use instead of Meta's rule as of December 2026 (``HUMAN_AGENT``
    only), and ``default_message_tag``, the tag of a broadcast that names none (none by default). A
    bad value (an unknown endpoint, method or placeholder, a retired tag) is an error when the hook
    builds its client, before any request.

    .. code-block:: python

        hook = AhaChatHook(ahachat_conn_id="ahachat_default")
        user = hook.client.find_user(phone="+84908071111")

    :param ahachat_conn_id: the ``ahachat`` connection to use.
    :param retry_unknown_outcome: retry message-sending requests whose outcome is unknown (a read
        timeout or a 500), at the risk of sending twice. Off by default.
    :param max_retries: retries of one request, instead of the connection's ``max_retries``; a
        sensor, which checks again anyway, uses 0.
    """

    conn_name_attr = "ahachat_conn_id"
    default_conn_name = "ahachat_default"
    conn_type = "ahachat"
    hook_name = "AhaChat"

    def __init__(
        self,
        ahachat_conn_id: str = default_conn_name,
        *,
        retry_unknown_outcome: bool = False,
        max_retries: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.ahachat_conn_id = ahachat_conn_id
        self.retry_unknown_outcome = retry_unknown_outcome
        self.max_retries = max_retries

    def __repr__(self) -> str:
        return f"{type(self).__name__}(ahachat_conn_id={self.ahachat_conn_id!r})"

    @cached_property
    def client(self) -> AhaChatClient:
        """The API client for this connection, built once per hook."""
        return self.client_from_connection(self.connection)

    @cached_property
    def connection(self) -> Connection:
        """The Airflow connection, read once per hook (each read may ask Airflow's supervisor)."""
        return self.get_connection(self.ahachat_conn_id)

    def get_conn(self) -> AhaChatClient:
        """The API client for this connection."""
        return self.client

    def client_from_connection(self, conn: Connection) -> AhaChatClient:
        """Build a client from ``conn``, after registering its token with the secret masker."""
        try:
            settings = self.connection_settings(conn)
        except AhaChatValidationError as err:
            raise AhaChatValidationError(
                [f"connection {self.ahachat_conn_id!r}: {problem}" for problem in err.problems]
            ) from None
        return self._build_client(**settings)

    def connection_settings(self, conn: Connection) -> dict[str, Any]:
        """
        What ``conn`` says, checked: the Bot ID, the token, the base URL, the timeouts and retries.

        The token is registered with the secret masker first. Every problem is reported at once,
        named by its field in the connection form.

        :raises AhaChatValidationError: when a field is missing or not of its form.
        """
        from airflow_provider_ahachat.client import DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT, RetryPolicy
        from airflow_provider_ahachat.version_compat import mask_secret

        token = (conn.password or "").strip()
        if token:
            mask_secret(token)
        bot_id = (conn.login or "").strip()
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
        extra = conn.extra_dejson
        given = self._extra_text(extra, "base_url")
        base_url = base_url_from_connection(conn.host, conn.port, conn.schema, given)
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            field = "Base URL (extra field 'base_url')" if given else "The address (host, port, schema)"
            problems.append(
                f"{field} must make an http or https URL such as http://127.0.0.1:8790, or be empty "
                f"for the real service; got {base_url[:80]!r}"
            )
        numbers: dict[str, float] = {}
        for name, default, whole in (
            ("connect_timeout", DEFAULT_CONNECT_TIMEOUT, False),
            ("timeout", DEFAULT_READ_TIMEOUT, False),
            ("max_retries", float(RetryPolicy.max_retries), True),
        ):
            try:
                numbers[name] = self._extra_number(extra, name, default, whole=whole, named=False)
            except AhaChatValidationError as err:
                problems.extend(err.problems)
        country_code = None
        try:
            country_code = self._country_code(extra)
        except AhaChatValidationError as err:
            problems.extend(err.problems)
        checked = self._checked_extras(extra, problems)
        if problems:
            raise AhaChatValidationError(problems)
        return {
            **checked,
            "default_country_code": country_code,
            "bot_id": bot_id,
            "token": token,
            "base_url": base_url,
            "connect_timeout": numbers["connect_timeout"],
            "read_timeout": numbers["timeout"],
            "max_retries": self.max_retries if self.max_retries is not None else int(numbers["max_retries"]),
        }

    def _checked_extras(self, extra: dict[str, Any], problems: list[str]) -> dict[str, Any]:
        """
        The extra fields checked as a whole: ``endpoints`` (corrected paths), and ``message_tags``
        and ``default_message_tag`` (the page's tags); each problem is added to ``problems``.
        """
        from airflow_provider_ahachat.actions import endpoint_table
        from airflow_provider_ahachat.models import MessageTagRule

        given = {
            name: extra.get(name, extra.get(f"extra__{self.conn_type}__{name}"))
            for name in ("endpoints", "message_tags", "default_message_tag")
        }
        try:
            given["endpoints"] = endpoint_table(given["endpoints"])
        except AhaChatValidationError as err:
            problems.extend(f"extra field {problem}" for problem in err.problems)
        try:
            MessageTagRule.of(given["message_tags"], given["default_message_tag"])
        except AhaChatValidationError as err:
            problems.extend(f"extra field {problem}" for problem in err.problems)
        return given

    def _build_client(
        self,
        *,
        bot_id: str,
        token: str,
        base_url: str,
        connect_timeout: float,
        read_timeout: float,
        max_retries: int,
        endpoints: Any = None,
        default_country_code: str | None = None,
        message_tags: Any = None,
        default_message_tag: Any = None,
    ) -> AhaChatClient:
        # Imported here, not at the top: DAG files import the operators, and so this module, at
        # parse time, when ``requests`` (a fifth of a second to import) is not needed yet.
        from airflow_provider_ahachat.client import AhaChatClient, RetryPolicy
        from airflow_provider_ahachat.models import DEFAULT_COUNTRY_CODE

        return AhaChatClient(
            bot_id=bot_id,
            token=token,
            base_url=base_url,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retry=RetryPolicy(max_retries=max_retries, retry_unknown_outcome=self.retry_unknown_outcome),
            endpoints=endpoints,
            default_country_code=default_country_code or DEFAULT_COUNTRY_CODE,
            message_tags=message_tags,
            default_message_tag=default_message_tag,
        )

    def async_client_from_connection(self, conn: Connection) -> AsyncAhaChatClient:
        """
        Build an asyncio client from ``conn``, with exactly the settings of :meth:`client_from_connection`.

        The token is registered with the secret masker there too.
        """
        from airflow_provider_ahachat.client import AsyncAhaChatClient

        return AsyncAhaChatClient.like(self.client_from_connection(conn))

    async def get_async_client(self) -> AsyncAhaChatClient:
        """
        A new asyncio client for this connection, for a trigger or other code on an event loop.

        Reading the connection and registering the token with the secret masker may wait on
        Airflow's supervisor; that happens in a worker thread, never on the event loop. Close the
        client with ``await client.aclose()``.
        """
        from asgiref.sync import sync_to_async

        def build() -> AsyncAhaChatClient:
            return self.async_client_from_connection(self.get_connection(self.ahachat_conn_id))

        return await sync_to_async(build)()

    def _extra_text(self, extra: dict[str, Any], name: str) -> str | None:
        """An extra field's text, or None when it is not set."""
        value = extra.get(name, extra.get(f"extra__{self.conn_type}__{name}"))
        return None if value in (None, "") else str(value)

    def _country_code(self, extra: dict[str, Any]) -> str:
        """The extra field ``default_country_code``, checked; Vietnam's ``84`` when absent."""
        from airflow_provider_ahachat.models import DEFAULT_COUNTRY_CODE, validate_country_code

        name = "default_country_code"
        value = extra.get(name, extra.get(f"extra__{self.conn_type}__{name}"))
        if value in (None, ""):
            return DEFAULT_COUNTRY_CODE
        return validate_country_code(value, f"connection {self.ahachat_conn_id!r}: extra field {name!r}")

    def _extra_number(
        self,
        extra: dict[str, Any],
        name: str,
        default: float,
        *,
        whole: bool = False,
        zero: bool = False,
        named: bool = True,
    ) -> float:
        """
        An extra field's number: above 0 (or 0 too when ``zero``), or a whole number of at least 0.

        The error names the connection unless ``named`` is False (the caller adds it, or, for a
        connection Test, whose ID Airflow makes up, leaves it out).
        """
        value = extra.get(name, extra.get(f"extra__{self.conn_type}__{name}"))
        if value in (None, ""):
            return default
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = float("nan")
        valid = number >= 0 and number.is_integer() if whole else number >= 0 if zero else number > 0
        if not valid:
            rule = (
                "a whole number, 0 or more"
                if whole
                else "0 or more"
                if zero
                else "a number of seconds above 0"
            )
            where = f"connection {self.ahachat_conn_id!r}: " if named else ""
            label = CONN_FIELDS.get(name, {}).get("label")
            field = f"{label} (extra field {name!r})" if label else f"extra field {name!r}"
            raise AhaChatValidationError(f"{where}{field} must be {rule}, got {value!r}")
        return number

    def call(self, method: str, path: str, params: Any = None, json: Any = None, **kwargs: Any) -> Any:
        """
        Call any AhaChat path with this connection, like ``SlackHook.call``: the token is added, and
        the errors, retries and redaction are those of every action. Returns AhaChat's whole answer.

        .. code-block:: python

            AhaChatHook().call("GET", "/api/bots/{bot_id}/users", params={"phone": "+84908071111"})

        :param method: ``GET``, ``POST``, ``PUT``, ``PATCH`` or ``DELETE``.
        :param path: the path from the root; ``{bot_id}`` is filled with the connection's Bot ID.
        :param params: the query, a mapping or name/value pairs (not the token).
        :param json: the JSON body, if any.
        :param kwargs: ``sends_message``; see :meth:`AhaChatClient.call`.
        """
        return self.client.call(method, path, params, json, **kwargs)

    # -- many recipients

    def bulk_runner(
        self,
        action: str,
        arguments: Mapping[str, Any],
        *,
        ledger: Ledger | None,
        concurrency: int | None = None,
        rate_limit: float | None = None,
        **options: Any,
    ) -> BulkRunner:
        """
        A :class:`~airflow_provider_ahachat.bulk.BulkRunner` for ``action`` on this connection.

        ``arguments`` (the tags, the text, the block...) are validated now, before anything is sent.
        ``rate_limit`` and ``concurrency`` default to the connection's extra fields, then to 20
        requests per second and :func:`default_concurrency`. ``options`` go to the runner.
        """
        from airflow_provider_ahachat.bulk import BulkRunner

        client = self.client
        extra = self.connection.extra_dejson
        if rate_limit is None:
            rate_limit = self._extra_number(extra, "rate_limit", DEFAULT_RATE_LIMIT, zero=True)
        if concurrency is None:
            concurrency = int(
                self._extra_number(extra, "concurrency", default_concurrency(rate_limit), whole=True)
            )
        if isinstance(concurrency, int) and concurrency > 0:
            client.ensure_pool(concurrency)  # a keep-alive connection per worker
        redis_conn_id = extra.get("rate_limit_redis_conn_id")
        if redis_conn_id and rate_limit:
            options["limiter"] = self.shared_rate_limiter(str(redis_conn_id), rate_limit)
        return BulkRunner(
            client,
            client.bind(action, arguments),
            ledger=ledger,
            concurrency=concurrency,
            rate_limit=rate_limit,
            **options,
        )

    def shared_rate_limiter(self, redis_conn_id: str, rate_limit: float) -> Any:
        """
        The bot's rate limit shared through the Redis connection ``redis_conn_id`` by every task that
        sends for the same bot (at the same AhaChat address).
        """
        try:
            from airflow.providers.redis.hooks.redis import RedisHook
        except ImportError:
            raise AhaChatValidationError(
                f"connection {self.ahachat_conn_id!r}: extra field 'rate_limit_redis_conn_id' needs the "
                "Redis provider: pip install 'airflow-provider-ahachat[redis]'"
            ) from None
        from airflow_provider_ahachat.bulk.pacing import RedisRateLimiter

        client = self.client
        key = f"ahachat:rate:{urlsplit(client.base_url).netloc}:{client.bot_id}"
        return RedisRateLimiter(RedisHook(redis_conn_id=redis_conn_id).get_conn(), key, rate_limit)

    def test_connection(self) -> tuple[bool, str]:
        """
        Check the Bot ID and the Bot Token against AhaChat; answer in words a person understands.

        Airflow's Test button and ``airflow connections test`` call this. It makes one attempt, with
        timeouts of at most 2 s to connect and 2.5 s to answer, so that it answers within seconds when
        AhaChat cannot be reached. The connection ID is never named: for the Test button it is one
        Airflow made up.
        """
        try:
            settings = self.connection_settings(self.connection)
        except AhaChatValidationError as err:
            return False, "The connection is not complete: " + "; ".join(err.problems) + "."
        settings.update(
            max_retries=0,
            connect_timeout=min(settings["connect_timeout"], TEST_CONNECT_TIMEOUT),
            read_timeout=min(settings["read_timeout"], TEST_READ_TIMEOUT),
        )
        base_url = settings["base_url"]
        try:
            with self._build_client(**settings) as client:
                bot = client.check_connection()
        except AhaChatAuthError:
            return False, REFUSED_TOKEN
        except AhaChatNotFoundError:
            return False, UNKNOWN_BOT
        except AhaChatTimeoutError:
            return False, (
                f"AhaChat at {base_url} did not answer within {settings['read_timeout']:g} seconds. "
                "Try again in a moment."
            )
        except AhaChatConnectionError as err:
            return False, (
                f"Could not reach AhaChat at {base_url} ({err.message}). Check the Base URL (empty "
                "for the real service) and that Airflow can reach it."
            )
        except AhaChatError as err:
            return False, f"AhaChat at {base_url} answered with an error: {err}"
        name = bot.get("name")
        named = f" ({name})" if name else ""
        return True, f"Connected to AhaChat bot {settings['bot_id']}{named} at {base_url}."

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """The connection form's standard fields, for Airflow versions that ask the hook."""
        return {
            "hidden_fields": UI_FIELD_BEHAVIOUR["hidden-fields"],
            "relabeling": UI_FIELD_BEHAVIOUR["relabeling"],
            "placeholders": UI_FIELD_BEHAVIOUR["placeholders"],
        }

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """The connection form's extra fields, for Airflow versions that ask the hook."""
        from flask_appbuilder.fieldwidgets import BS3PasswordFieldWidget, BS3TextFieldWidget
        from flask_babel import lazy_gettext
        from wtforms import BooleanField, IntegerField, PasswordField, StringField
        from wtforms.validators import NumberRange, Optional

        widgets: dict[str, Any] = {}
        for name, spec in CONN_FIELDS.items():
            if "boolean" in spec["schema"]["type"]:
                widgets[name] = BooleanField(lazy_gettext(spec["label"]), description=spec["description"])
                continue
            integer = "integer" in spec["schema"]["type"]
            secret = spec["schema"].get("format") == "password"
            field_class = IntegerField if integer else PasswordField if secret else StringField
            validators = [Optional(strip_whitespace=True)]
            if integer:
                validators.append(NumberRange(min=spec["schema"].get("minimum", 0)))
            widgets[name] = field_class(
                lazy_gettext(spec["label"]),
                widget=BS3PasswordFieldWidget() if secret else BS3TextFieldWidget(),
                validators=validators,
                description=spec["description"],
            )
        return widgets
