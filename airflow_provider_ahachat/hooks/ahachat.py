"""The Airflow side of AhaChat: turns an ``ahachat`` connection into settings, and owns the client."""

from __future__ import annotations

from dataclasses import replace
from functools import cached_property
from typing import TYPE_CHECKING, Any

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
from airflow_provider_ahachat.get_provider_info import CONN_FIELDS, UI_FIELD_BEHAVIOUR

if TYPE_CHECKING:
    from airflow.sdk import Connection

    from airflow_provider_ahachat.client import AhaChatClient, AsyncAhaChatClient
    from airflow_provider_ahachat.settings import ClientSettings

#: What a refused token means, in words a person can act on.
REFUSED_TOKEN = (
    "AhaChat refused the Bot Token for this Bot ID. Copy both again from the bot's Settings in AhaChat "
    "(the token changes whenever it is reset)."
)

#: The connection Test makes one attempt with at most these timeouts (seconds), so that it answers
#: within about 3 seconds when AhaChat cannot be reached, instead of retrying as a task would.
TEST_CONNECT_TIMEOUT = 2.0
TEST_READ_TIMEOUT = 2.5


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
    only), ``default_message_tag``, the tag of a broadcast that names none (none by default), and
    ``answer_keys``, the keys of the JSON API answer that carries held messages (provisional). A
    bad value (an unknown endpoint, method or placeholder, a retired tag) is an error when the hook
    reads the connection, before any request.

    .. code-block:: python

        hook = AhaChatHook(ahachat_conn_id="ahachat_default")
        user = hook.client.run("find_user", phone="+84908071111").data

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
    def connection(self) -> Connection:
        """The Airflow connection, read once per hook (each read may ask Airflow's supervisor)."""
        return self.get_connection(self.ahachat_conn_id)

    @cached_property
    def settings(self) -> ClientSettings:
        """What the connection says, checked once: the settings the client is built with."""
        return self.settings_from_connection(self.connection)

    @cached_property
    def client(self) -> AhaChatClient:
        """The API client for this connection, built once per hook."""
        # Imported here, not at the top: DAG files import the operators, and so this module, at
        # parse time, when ``requests`` (a fifth of a second to import) is not needed yet.
        from airflow_provider_ahachat.client import AhaChatClient

        return AhaChatClient(settings=self.settings)

    def get_conn(self) -> AhaChatClient:
        """The API client for this connection."""
        return self.client

    def settings_from_connection(self, conn: Connection, *, named: bool = True) -> ClientSettings:
        """
        The settings ``conn`` gives, after registering its token with the secret masker.

        :param named: name the connection in the errors (a Test button's connection ID is made up).
        :raises AhaChatValidationError: naming each field that is missing or not of its form.
        """
        from airflow_provider_ahachat.settings import settings_from_connection
        from airflow_provider_ahachat.version_compat import mask_secret

        token = (conn.password or "").strip()
        if token:
            mask_secret(token)
        try:
            return settings_from_connection(
                conn.login,
                conn.password,
                conn.host,
                conn.port,
                conn.schema,
                conn.extra_dejson,
                max_retries=self.max_retries,
                retry_unknown_outcome=self.retry_unknown_outcome,
            )
        except AhaChatValidationError as err:
            if not named:
                raise
            problems = [f"connection {self.ahachat_conn_id!r}: {problem}" for problem in err.problems]
            raise AhaChatValidationError(problems) from None

    def client_from_connection(self, conn: Connection) -> AhaChatClient:
        """A client for ``conn``, after registering its token with the secret masker."""
        from airflow_provider_ahachat.client import AhaChatClient

        return AhaChatClient(settings=self.settings_from_connection(conn))

    async def get_async_client(self) -> AsyncAhaChatClient:
        """
        A new asyncio client for this connection, for a trigger or other code on an event loop.

        Reading the connection and registering the token with the secret masker may wait on
        Airflow's supervisor; that happens in a worker thread, never on the event loop. Close the
        client with ``await client.aclose()``.
        """
        from asgiref.sync import sync_to_async

        from airflow_provider_ahachat.client import AsyncAhaChatClient

        def build() -> AsyncAhaChatClient:
            conn = self.get_connection(self.ahachat_conn_id)
            return AsyncAhaChatClient(settings=self.settings_from_connection(conn))

        return await sync_to_async(build)()

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

    def test_connection(self) -> tuple[bool, str]:
        """
        Check the Bot ID and the Bot Token against AhaChat; answer in words a person understands.

        Airflow's Test button and ``airflow connections test`` call this. It makes one attempt, with
        timeouts of at most 2 s to connect and 2.5 s to answer, so that it answers within seconds when
        AhaChat cannot be reached. The connection ID is never named: for the Test button it is one
        Airflow made up.
        """
        from airflow_provider_ahachat.client import AhaChatClient, RetryPolicy

        try:
            settings = self.settings_from_connection(self.connection, named=False)
        except AhaChatValidationError as err:
            return False, "The connection is not complete: " + "; ".join(err.problems) + "."
        connect, read = settings.timeout
        settings = replace(
            settings,
            timeout=(min(connect, TEST_CONNECT_TIMEOUT), min(read, TEST_READ_TIMEOUT)),
            retry=RetryPolicy(max_retries=0),
        )
        try:
            with AhaChatClient(settings=settings) as client:
                bot = client.run("check_connection").data
        except AhaChatError as err:
            return False, _test_failure(err, settings)
        named = f" ({bot['name']})" if bot.get("name") else ""
        return True, f"Connected to AhaChat bot {settings.bot_id}{named} at {settings.base_url}."

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


def _test_failure(err: AhaChatError, settings: ClientSettings) -> str:
    """Why a connection Test failed, in words a person can act on."""
    base_url = settings.base_url
    if isinstance(err, AhaChatAuthError):
        return REFUSED_TOKEN
    if isinstance(err, AhaChatNotFoundError):
        return UNKNOWN_BOT
    if isinstance(err, AhaChatTimeoutError):
        return (
            f"AhaChat at {base_url} did not answer within {settings.timeout[1]:g} seconds. "
            "Try again in a moment."
        )
    if isinstance(err, AhaChatConnectionError):
        return (
            f"Could not reach AhaChat at {base_url} ({err.message}). Check the Base URL (empty "
            "for the real service) and that Airflow can reach it."
        )
    return f"AhaChat at {base_url} answered with an error: {err}"
