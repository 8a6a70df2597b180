"""
The webhook receiver: AhaChat's JSON API block calls it, and it records an Airflow asset event.

``POST /webhooks/{conn_id}/{event}`` (Airflow mounts the app at ``/ahachat``, see
:mod:`airflow_provider_ahachat.inbound.plugin`), with the header ``X-AhaChat-Secret``:

* ``conn_id`` names an ``ahachat`` connection; its extra ``webhook_secret`` is the shared secret,
  compared in constant time through keys derived for this purpose only
  (:mod:`airflow_provider_ahachat.inbound.keys`). An unknown connection, one of another type and one
  without a secret get the same 401 as a wrong secret, so nobody can probe connection IDs. With
  ``webhook_enabled`` false, a caller with the right secret gets 403.
* The body is a JSON object, or form fields (``application/x-www-form-urlencoded`` or
  ``multipart/form-data``), at most 64 KiB (413 while it arrives), strict JSON at most 32 levels
  deep (400; see :mod:`airflow_provider_ahachat.inbound.intake`), and carries the customer's ID in
  ``messenger_user_id`` (or the field named by the extra ``webhook_user_id_field``).
* Each accepted call becomes an asset event on ``ahachat://<conn_id>/<event>`` whose ``extra`` is
  ``{"messenger_user_id", "bot_id", "conn_id", "event", "received_at", "fields"}`` (``fields``:
  everything else the bot sent), and the answer is AhaChat's JSON API format: ``{}``, or the
  acknowledgement text set for the event in the extra ``webhook_replies``, followed by the
  messages held for that customer (``outside_window="hold"``; :mod:`.held_calls`), in the keys
  of the extra ``answer_keys``.
* ``POST /webhooks/{conn_id}/_held``, authenticated alike, records no event and needs no DAG: it
  answers with the customer's held messages, ``{}`` when there are none.
* An ``Idempotency-Key`` header, or an ``idempotency_key`` field, makes a repeated call (AhaChat
  retries after a timeout) record nothing more within :data:`IDEMPOTENCY_WINDOW`.
* At most ``webhook_events_per_minute`` events a minute per connection (default 600, 0 for no
  limit) per API server worker; over it, 429 with ``Retry-After``.
* When the metadata database cannot record the event (busy, down), 503 with ``Retry-After``.
* Answers and log lines never quote what the caller sent at length, and never a secret: the
  connection's webhook and approval secrets and its Bot Token are masked wherever they appear
  (a body field holding one is stored as ``***``).

The app knows nothing of Airflow's internals: it is given a function that reads a connection and
one that records an event. Airflow's own are in :mod:`.plugin` and :mod:`.airflow_internals`.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from functools import cached_property
from typing import Any, Literal
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from airflow_provider_ahachat.events import EVENT_NAME_RULE, event_uri, validate_event_name
from airflow_provider_ahachat.held.answer import ANSWER_KEYS
from airflow_provider_ahachat.inbound.held_calls import (
    DELIVERED_EVENT,
    HELD_ROUTE,
    DeliverHeld,
    HeldAnswers,
    HeldKeysError,
    keys_of,
)
from airflow_provider_ahachat.inbound.intake import (
    MAX_BODY_BYTES,
    MAX_DEPTH,
    BodyLimit,
    Refused,
    check_json,
    keep_secret,
    kept_secrets,
    loggable,
    masked,
    parse_fields,
    read_body,
)
from airflow_provider_ahachat.inbound.keys import WEBHOOK, derive_key

log = logging.getLogger(__name__)

#: The header that carries the connection's ``webhook_secret``.
SECRET_HEADER = "X-AhaChat-Secret"
#: The header, and the body field, that carry an optional idempotency key.
IDEMPOTENCY_HEADER = "Idempotency-Key"
IDEMPOTENCY_FIELD = "idempotency_key"
#: How long an idempotency key is remembered.
IDEMPOTENCY_WINDOW = timedelta(hours=1)
#: The field that names the customer unless the connection's ``webhook_user_id_field`` says otherwise.
DEFAULT_USER_ID_FIELD = "messenger_user_id"
#: Events a minute per connection unless its ``webhook_events_per_minute`` says otherwise.
DEFAULT_EVENTS_PER_MINUTE = 600.0
#: ``Retry-After`` when the metadata database could not record an event.
RETRY_AFTER_SECONDS = 1
#: The key of ``webhook_replies`` that applies to every event without its own text.
ANY_EVENT = "*"

_USER_ID = re.compile(r"[0-9]{1,32}")
_FIELD_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,100}")
_MAX_KEY = 200
_MAX_REPLY = 2000

#: What :data:`RecordEvent` answers: recorded, a repeat of a recorded key, or no such asset.
Outcome = Literal["recorded", "duplicate", "no_asset"]
#: ``record(uri, extra, idempotency_key)``: records one asset event, in a worker thread.
RecordEvent = Callable[[str, dict[str, Any], "str | None"], Outcome]


class WebhookConfigError(ValueError):
    """A connection's webhook settings are wrong; the message names the field and the rule."""


@dataclass(frozen=True)
class WebhookSettings:
    """
    The webhook settings of one ``ahachat`` connection, read from its extra.

    :param conn_id: the connection's ID.
    :param bot_id: the Bot ID (the connection's login), put in every event.
    :param secret: ``webhook_secret``; None turns receiving off.
    :param enabled: ``webhook_enabled``; False turns receiving off although a secret is set.
    :param user_id_field: ``webhook_user_id_field``, the body field with the customer's ID.
    :param replies: ``webhook_replies``: event name (or ``*``) → the text the customer sees at once.
    :param events_per_minute: ``webhook_events_per_minute``; 0 for no limit.
    :param answer_keys: ``answer_keys``: the keys of the JSON API answer that carries held messages.
    :param problem: what is wrong with the other webhook settings, if anything (calls fail with 500).
    :param masked: the connection's other secrets (``approval_secret``, the Bot Token), masked as
        the webhook secret is wherever a caller puts them.
    """

    conn_id: str
    bot_id: str | None
    secret: str | None = field(default=None, repr=False)
    enabled: bool = True
    user_id_field: str = DEFAULT_USER_ID_FIELD
    replies: Mapping[str, str] = field(default_factory=dict)
    events_per_minute: float = DEFAULT_EVENTS_PER_MINUTE
    answer_keys: Mapping[str, str] = field(default_factory=lambda: ANSWER_KEYS)
    problem: str | None = None
    masked: tuple[str, ...] = field(default=(), repr=False)

    @cached_property
    def key(self) -> bytes | None:
        """The webhook key of :attr:`secret` (compared instead of the secret itself)."""
        return None if self.secret is None else derive_key(self.secret, WEBHOOK)

    @property
    def secrets(self) -> tuple[str, ...]:
        """
        Every secret a call to this connection must never see again, longest first: the
        connection's, and those of every other connection this process has read.
        """
        found = {s for s in (self.secret, *self.masked, *kept_secrets()) if s}
        return tuple(sorted(found, key=len, reverse=True))

    @classmethod
    def from_connection(
        cls,
        conn_id: str,
        *,
        conn_type: str | None,
        login: str | None,
        extra: Mapping[str, Any],
        password: str | None = None,
    ) -> WebhookSettings | None:
        """
        The settings of a connection, or None when it is not an ``ahachat`` connection. Its secrets
        are registered to be masked (:func:`~airflow_provider_ahachat.inbound.intake.keep_secret`).

        :raises WebhookConfigError: when ``webhook_secret`` is not a string; a problem with another
            field is kept in :attr:`problem` instead.
        """
        if conn_type != "ahachat":
            return None

        def get(name: str) -> Any:
            value = extra.get(name, extra.get(f"extra__ahachat__{name}"))
            return None if value == "" else value

        secret = get("webhook_secret")
        if secret is not None and not isinstance(secret, str):
            raise WebhookConfigError("webhook_secret: must be a string")
        approval = get("approval_secret")
        masked = tuple(s for s in (approval, password) if isinstance(s, str) and s)
        for each in (secret, *masked):
            keep_secret(each)
        settings = cls(conn_id=conn_id, bot_id=login or None, secret=secret or None, masked=masked)
        try:
            enabled = get("webhook_enabled")
            if isinstance(enabled, str):
                enabled = enabled.strip().lower() not in ("false", "0", "no", "off")
            user_id_field = get("webhook_user_id_field") or DEFAULT_USER_ID_FIELD
            if not isinstance(user_id_field, str) or not _FIELD_NAME.fullmatch(user_id_field):
                raise WebhookConfigError(
                    "webhook_user_id_field: must be a field name (letters, digits, _ . -)"
                )
            return replace(
                settings,
                enabled=enabled is None or bool(enabled),
                user_id_field=user_id_field,
                replies=_replies(get("webhook_replies")),
                events_per_minute=_events_per_minute(get("webhook_events_per_minute")),
                answer_keys=keys_of(get("answer_keys")),
            )
        except (WebhookConfigError, HeldKeysError) as err:
            # Told only to a caller with the right secret; nobody else learns the connection exists.
            return replace(settings, problem=str(err))

    def reply_for(self, event: str) -> str | None:
        """The acknowledgement text for ``event``, if any."""
        return self.replies.get(event, self.replies.get(ANY_EVENT))


def _replies(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, str):
        text = value.strip()
        if not text.startswith("{"):
            value = {ANY_EVENT: text}
        else:
            try:
                value = json.loads(text)
            except ValueError:
                raise WebhookConfigError(
                    "webhook_replies: must be a JSON object of event name to text, or one text"
                ) from None
    if not isinstance(value, Mapping):
        raise WebhookConfigError("webhook_replies: must be a JSON object of event name to text, or one text")
    replies: dict[str, str] = {}
    for event, text in value.items():
        if event != ANY_EVENT:
            try:
                validate_event_name(event)
            except ValueError as err:
                raise WebhookConfigError(f"webhook_replies: {err}") from None
        if not isinstance(text, str) or not text.strip() or len(text) > _MAX_REPLY:
            raise WebhookConfigError(
                f"webhook_replies: the text for {event!r} must be 1 to {_MAX_REPLY} characters"
            )
        replies[event] = text
    return replies


def _events_per_minute(value: Any) -> float:
    if value is None:
        return DEFAULT_EVENTS_PER_MINUTE
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if not math.isfinite(number) or number < 0 or isinstance(value, bool):
        raise WebhookConfigError("webhook_events_per_minute: must be a number, 0 or more (0: no limit)")
    return number


class Throttle:
    """
    A token bucket per connection: ``limit`` events a minute, up to a minute's worth at once.

    Used from the event loop only, so it needs no lock.

    :param clock: seconds, monotonic.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, tuple[float, float, float]] = {}

    def take(self, key: str, per_minute: float) -> float:
        """Take one token: 0.0 if there was one, else the seconds until there is."""
        if per_minute <= 0:
            return 0.0
        now = self._clock()
        tokens, last, limit = self._buckets.get(key, (per_minute, now, per_minute))
        if limit != per_minute:  # the setting changed: start afresh
            tokens, last = per_minute, now
        tokens = min(per_minute, tokens + (now - last) * per_minute / 60.0)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now, per_minute)
            return 0.0
        self._buckets[key] = (tokens, now, per_minute)
        return (1.0 - tokens) * 60.0 / per_minute

    def give_back(self, key: str) -> None:
        """Return the token of a call that recorded nothing."""
        if key in self._buckets:
            tokens, last, limit = self._buckets[key]
            self._buckets[key] = (min(limit, tokens + 1.0), last, limit)


_UNAUTHORIZED = f"wrong or missing {SECRET_HEADER} for this connection"
#: Compared with the key of a secret sent for no known connection, so that the work is the same.
_NO_KEY = derive_key("-", WEBHOOK)


def _user_id(fields: Mapping[str, Any], name: str) -> str:
    value = fields.get(name)
    if value is None or value == "":
        raise Refused(422, f"{name}: missing; the body must carry the customer's Messenger user ID")
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not _USER_ID.fullmatch(value.strip()):
        raise Refused(
            422,
            f"{name}: must be the customer's Messenger user ID (1 to 32 digits); got "
            + (f"{len(value)} characters" if isinstance(value, str) else f"a JSON {type(value).__name__}"),
        )
    return value.strip()


def _idempotency_key(request: Request, fields: dict[str, Any]) -> str | None:
    key = request.headers.get(IDEMPOTENCY_HEADER)
    from_body = fields.pop(IDEMPOTENCY_FIELD, None)
    key = key if key is not None else from_body
    if key is None or key == "":
        return None
    if not isinstance(key, str | int) or isinstance(key, bool):
        raise Refused(422, f"{IDEMPOTENCY_FIELD}: must be a string")
    key = str(key)
    if len(key) > _MAX_KEY:
        raise Refused(422, f"{IDEMPOTENCY_FIELD}: at most {_MAX_KEY} characters")
    return key


def _without_secrets(value: Any, secrets: tuple[str, ...]) -> Any:
    """``value`` with every string that holds a secret (or its URL-encoded form) as ``***``."""
    forms = {form for secret in secrets for form in (secret, quote(secret, safe=""))}
    if not forms:
        return value

    def clean(item: Any) -> Any:
        if isinstance(item, str):
            return "***" if any(form in item for form in forms) else item
        if isinstance(item, Mapping):
            return {k: clean(v) for k, v in item.items() if clean(k) != "***"}
        if isinstance(item, list):
            return [clean(v) for v in item]
        return item

    return clean(value)  # the depth is bounded by the intake's nesting limit


def answer(text: str | None) -> dict[str, Any]:
    """The answer in AhaChat's JSON API format: nothing to show, or one text message."""
    return {"messages": [{"text": text}]} if text else {}


class _SettingsCache:
    """Connections looked up at most every ``seconds``; a bounded number kept, unknown ones too."""

    def __init__(
        self, load: Callable[[str], WebhookSettings | None], seconds: float, size: int = 1024
    ) -> None:
        self._load = load
        self._seconds = seconds
        self._size = size
        self._entries: dict[str, tuple[float, WebhookSettings | None]] = {}

    async def get(self, conn_id: str) -> WebhookSettings | None:
        now = time.monotonic()
        hit = self._entries.get(conn_id)
        if hit is not None and now - hit[0] < self._seconds:
            return hit[1]
        settings = await run_in_threadpool(self._load, conn_id)
        if len(self._entries) >= self._size:
            self._entries.clear()
        self._entries[conn_id] = (now, settings)
        return settings


def create_receiver_app(
    *,
    load_settings: Callable[[str], WebhookSettings | None],
    record: RecordEvent,
    cache_seconds: float = 5.0,
    throttle: Throttle | None = None,
    deliver_held: DeliverHeld | None = None,
) -> FastAPI:
    """
    The receiver as a FastAPI app. Every route of the app, and any router included in it later,
    reads bodies within :data:`MAX_BODY_BYTES` (:class:`~airflow_provider_ahachat.inbound.intake.BodyLimit`).

    :param load_settings: the settings of a connection ID, None for no such ``ahachat`` connection;
        called in a worker thread, at most every ``cache_seconds`` per connection.
    :param record: records one event; see :data:`RecordEvent`.
    :param cache_seconds: how long a connection's settings are reused.
    :param throttle: the per-connection limit's state (a new one by default).
    :param deliver_held: reaches the held messages (see :data:`.held_calls.DeliverHeld`); None
        delivers none.
    """
    app = FastAPI(
        title="AhaChat webhooks",
        description="AhaChat's JSON API block calls these to start Airflow DAGs.",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    receiver = _Receiver(
        _SettingsCache(load_settings, cache_seconds),
        record,
        throttle or Throttle(),
        HeldAnswers(deliver_held, record),
    )

    # Before the route of every event, so that it wins for this one name.
    @app.post(f"/webhooks/{{conn_id}}/{HELD_ROUTE}")
    async def held(conn_id: str, request: Request) -> JSONResponse:
        """Answer with the customer's held messages (``{}`` when none); record no event."""
        return await receiver.answer(conn_id, None, request)

    @app.post("/webhooks/{conn_id}/{event}")
    async def receive(conn_id: str, event: str, request: Request) -> JSONResponse:
        """Record the bot's call as an asset event and answer in AhaChat's JSON API format."""
        return await receiver.answer(conn_id, event, request)

    return app


class _Receiver:
    """One call: who calls (the secret), what they send (the body), and the event it records."""

    def __init__(
        self, settings: _SettingsCache, record: RecordEvent, limits: Throttle, held: HeldAnswers
    ) -> None:
        self.settings = settings
        self.record = record
        self.limits = limits
        self.held = held

    async def answer(self, conn_id: str, event: str | None, request: Request) -> JSONResponse:
        """The answer to one call of ``event`` (None: of the route that only delivers held messages)."""
        known: WebhookSettings | None = None
        try:
            known = await self.authenticate(conn_id, request)
            if event is None:
                user_id, key = await self.held_only(known, request)
                first: list[dict[str, Any]] = []
            else:
                user_id, key, first = await self.receive(known, event, request)
            body, after = await self.held.answer(
                conn_id=known.conn_id,
                bot_id=known.bot_id,
                user_id=user_id,
                event=event or HELD_ROUTE,
                key=key,
                first=first,
                keys=known.answer_keys,
            )
            return JSONResponse(body, background=after)
        except Refused as refused:
            # The connection and the event are named only to a caller who had the secret.
            secrets = known.secrets if known else ()
            message = masked(refused.message, secrets)
            log.info(
                "AhaChat webhook refused (%s): connection %s, event %s: %s",
                refused.status,
                loggable(conn_id, 100, secrets) if known else "(not authenticated)",
                loggable(event, 100, secrets) if known else "-",
                message,
            )
            return JSONResponse({"error": message}, refused.status, headers=refused.headers)

    async def authenticate(self, conn_id: str, request: Request) -> WebhookSettings:
        """The connection's settings, if the right secret came for it; else the same 401 for all."""
        try:
            settings = await self.settings.get(conn_id)
        except WebhookConfigError as err:
            log.error("AhaChat webhook: a connection's webhook_secret is wrong: %s", err)
            settings = None
        given = derive_key(request.headers.get(SECRET_HEADER, ""), WEBHOOK)
        expected = settings.key if settings is not None else None
        if not hmac.compare_digest(given, expected or _NO_KEY) or expected is None:
            raise Refused(401, _UNAUTHORIZED)
        assert settings is not None
        return settings

    @staticmethod
    def check_settings(settings: WebhookSettings) -> None:
        """Refuse every call of a connection whose settings are wrong, or that receives nothing."""
        if settings.problem is not None:
            log.error("AhaChat webhook: connection %s: %s", settings.conn_id, settings.problem)
            raise Refused(500, f"the connection's webhook settings are wrong: {settings.problem}")
        if not settings.enabled:
            raise Refused(403, "receiving is turned off for this connection (webhook_enabled)")

    async def held_only(self, settings: WebhookSettings, request: Request) -> tuple[str, str | None]:
        """A call of the route that only delivers held messages: who calls, and its idempotency key."""
        self.check_settings(settings)
        fields = await parse_fields(request, await read_body(request))
        user_id = _user_id(fields, settings.user_id_field)
        key = _idempotency_key(request, fields)
        self.take_token(settings)
        return user_id, key

    async def receive(
        self, settings: WebhookSettings, event: str, request: Request
    ) -> tuple[str, str | None, list[dict[str, Any]]]:
        """
        Record the call of ``event``: who called, its idempotency key, and the acknowledgement
        the answer starts with.
        """
        self.check_settings(settings)
        try:
            uri = event_uri(validate_event_name(event), settings.conn_id)
        except ValueError:
            raise Refused(422, f"event: not a valid event name ({EVENT_NAME_RULE})") from None
        if event == DELIVERED_EVENT:
            raise Refused(422, f"event: {DELIVERED_EVENT!r} is recorded by Airflow itself, when it delivers")
        fields = await parse_fields(request, await read_body(request))
        extra, key = self.extra(settings, event, request, fields)
        self.take_token(settings)
        outcome = await self.store(settings, event, uri, extra, key)
        if outcome == "no_asset":
            self.limits.give_back(settings.conn_id)
            raise Refused(
                404,
                f"no DAG is scheduled on this event: add schedule=[ahachat_event({event!r}, "
                f"ahachat_conn_id={settings.conn_id!r})] to one",
            )
        if outcome == "duplicate":
            self.limits.give_back(settings.conn_id)
            log.info(
                "AhaChat webhook %s/%s: repeated idempotency key, nothing recorded",
                settings.conn_id,
                loggable(event, 100, settings.secrets),
            )
        return extra["messenger_user_id"], key, answer(settings.reply_for(event)).get("messages", [])

    def extra(
        self, settings: WebhookSettings, event: str, request: Request, fields: dict[str, Any]
    ) -> tuple[dict[str, Any], str | None]:
        """The event's ``extra`` (checked to be JSON any reader takes) and its idempotency key."""
        user_id = _user_id(fields, settings.user_id_field)
        key = _idempotency_key(request, fields)
        fields.pop(settings.user_id_field, None)
        extra: dict[str, Any] = {
            "messenger_user_id": user_id,
            "bot_id": settings.bot_id,
            "conn_id": settings.conn_id,
            "event": event,
            "received_at": datetime.now(timezone.utc).isoformat(),
            "fields": _without_secrets(fields, settings.secrets),
        }
        if key is not None:
            key = _without_secrets(key, settings.secrets)
            extra["idempotency_key"] = key
        check_json(extra, MAX_DEPTH + 1)  # the body's fields are one level down in the extra
        return extra, key

    def take_token(self, settings: WebhookSettings) -> None:
        wait = self.limits.take(settings.conn_id, settings.events_per_minute)
        if wait:
            raise Refused(
                429,
                f"more than {settings.events_per_minute:g} events a minute for this connection "
                "(webhook_events_per_minute)",
                {"Retry-After": str(max(1, math.ceil(wait)))},
            )

    async def store(
        self, settings: WebhookSettings, event: str, uri: str, extra: dict[str, Any], key: str | None
    ) -> Outcome:
        try:
            return await run_in_threadpool(self.record, uri, extra, key)
        except Exception as err:  # the metadata database is busy or down: the bot may call again
            self.limits.give_back(settings.conn_id)
            log.error(
                "AhaChat webhook %s/%s: could not record the event: %s",
                settings.conn_id,
                loggable(event, 100, settings.secrets),
                loggable(f"{type(err).__name__}: {err}", 500, settings.secrets),
            )
            raise Refused(
                503, "could not record the event now; call again", {"Retry-After": str(RETRY_AFTER_SECONDS)}
            ) from None
