"""
Inbound events: the bot's JSON API block calls Airflow, and a DAG runs on it.

``ahachat_event("order_status", ahachat_conn_id="ahachat_default")`` is the Airflow asset that
receives an event each time the bot calls ``POST /ahachat/webhooks/ahachat_default/order_status``
on Airflow's API server (see :mod:`airflow_provider_ahachat.inbound.receiver`). A DAG with
``schedule=[ahachat_event(...)]`` runs on those events; its tasks read the customers from the
run's ``triggering_asset_events`` with :func:`customer_events` or :func:`recipients_from_events`.

This module is imported by DAG files: it imports nothing heavy (Airflow's ``Asset`` only when
called).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk import Asset

__all__ = [
    "ASSET_GROUP",
    "EVENT_NAME_RULE",
    "URI_SCHEME",
    "ahachat_event",
    "customer_events",
    "event_uri",
    "recipients_from_events",
    "validate_event_name",
]

#: The scheme of the assets of bot events: ``ahachat://<conn_id>/<event>``.
URI_SCHEME = "ahachat"
#: The asset group Airflow's UI shows them under.
ASSET_GROUP = "ahachat"

_EVENT_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,100}")
#: The rule an event name follows, as error messages say it.
EVENT_NAME_RULE = "1 to 100 letters, digits, '_', '.' or '-'"
_CONN_ID = re.compile(r"[A-Za-z0-9_.\-]{1,250}")


def validate_event_name(event: Any) -> str:
    """
    ``event`` if it is a valid event name, else :class:`ValueError` naming the rule.

    :param event: the event's short name, as in the webhook's URL.
    """
    if not isinstance(event, str) or not _EVENT_NAME.fullmatch(event) or event in (".", ".."):
        raise ValueError(f"event: {str(event)[:100]!r} is not a valid event name ({EVENT_NAME_RULE})")
    return event


def event_uri(event: str, ahachat_conn_id: str = "ahachat_default") -> str:
    """
    The asset URI of ``event`` on the connection ``ahachat_conn_id``: ``ahachat://<conn_id>/<event>``.

    :param event: the event's short name.
    :param ahachat_conn_id: the ``ahachat`` connection whose webhook receives the event.
    """
    validate_event_name(event)
    if not isinstance(ahachat_conn_id, str) or not _CONN_ID.fullmatch(ahachat_conn_id):
        raise ValueError(
            f"ahachat_conn_id: {str(ahachat_conn_id)[:100]!r} must be letters, digits, '_', '.' or '-' "
            "(a connection the webhook URL can name)"
        )
    return f"{URI_SCHEME}://{ahachat_conn_id}/{event}"


def ahachat_event(event: str, ahachat_conn_id: str = "ahachat_default") -> Asset:
    """
    The Airflow asset that records each call of the bot to the webhook of ``event``.

    .. code-block:: python

        with DAG("order_status", schedule=[ahachat_event("order_status")]):
            ...

    :param event: the event's short name (letters, digits, ``_ . -``): the last part of the webhook
        URL ``/ahachat/webhooks/<conn_id>/<event>``.
    :param ahachat_conn_id: the ``ahachat`` connection whose ``webhook_secret`` the bot sends.
    """
    from airflow.sdk import Asset

    uri = event_uri(event, ahachat_conn_id)
    return Asset(name=uri, uri=uri, group=ASSET_GROUP)


def _event_extra(event: Any) -> tuple[str | None, Mapping[str, Any] | None]:
    """The asset URI and the ``extra`` of one triggering event, whatever form it arrived in."""
    if isinstance(event, Mapping):
        asset = event.get("asset")
        uri = asset.get("uri") if isinstance(asset, Mapping) else getattr(asset, "uri", None)
        extra = event.get("extra")
    else:
        uri = getattr(getattr(event, "asset", None), "uri", None)
        extra = getattr(event, "extra", None)
    return uri, extra if isinstance(extra, Mapping) else None


#: The keys of one event given as a mapping (rather than a mapping of assets to their events).
_EVENT_KEYS = ("extra", "asset")


def _flatten(events: Any) -> Iterable[Any]:
    """Every event in ``triggering_asset_events`` (asset → events), or in a plain list of events."""
    if events is None:
        return []
    # The keys are compared, never hashed: before task SDK 1.2 (Airflow 3.2) an Asset is unhashable.
    if isinstance(events, Mapping) and not any(isinstance(key, str) and key in _EVENT_KEYS for key in events):
        # An event recorded through an asset alias is listed under the asset and under the alias.
        unique = {id(one): one for batch in events.values() for one in batch}
        return list(unique.values())
    if isinstance(events, Mapping):
        return [events]
    return list(events)


def customer_events(
    triggering_asset_events: Any, *, event: str | None = None, ahachat_conn_id: str | None = None
) -> list[dict[str, Any]]:
    """
    One entry per bot event in a run's ``triggering_asset_events``, oldest first; none is dropped.

    Airflow may fold several events into one DAG run; each entry is the ``extra`` the receiver
    recorded: ``messenger_user_id``, ``bot_id``, ``conn_id``, ``event``, ``received_at`` (ISO 8601)
    and ``fields`` (everything else the bot sent, such as ``order_code``). Events of other assets
    are left out.

    :param triggering_asset_events: the run's ``triggering_asset_events`` (from the task's context),
        or a list of events.
    :param event: keep only this event's name.
    :param ahachat_conn_id: keep only events received for this connection.
    """
    found: list[dict[str, Any]] = []
    for one in _flatten(triggering_asset_events):
        uri, extra = _event_extra(one)
        if extra is None or not extra.get("messenger_user_id"):
            continue
        if uri is not None and not str(uri).startswith(f"{URI_SCHEME}://"):
            continue
        if event is not None and extra.get("event") != event:
            continue
        if ahachat_conn_id is not None and extra.get("conn_id") != ahachat_conn_id:
            continue
        found.append(dict(extra))
    found.sort(key=lambda e: str(e.get("received_at") or ""))
    return found


def recipients_from_events(
    triggering_asset_events: Any, *, event: str | None = None, ahachat_conn_id: str | None = None
) -> list[dict[str, str]]:
    """
    The customers of a run's bot events as ``recipients`` for any per-user operator.

    One row ``{"user_id": ...}`` per customer, in the order they wrote: a customer who called twice
    in the same batch is messaged once, and nobody is dropped. Pass it to ``recipients=`` of
    ``SendTextMessageOperator``, ``AddTagsOperator`` and the others (through a task's XCom).

    :param triggering_asset_events: the run's ``triggering_asset_events``, or a list of events.
    :param event: keep only this event's name.
    :param ahachat_conn_id: keep only events received for this connection.
    """
    seen: set[str] = set()
    rows: list[dict[str, str]] = []
    for extra in customer_events(triggering_asset_events, event=event, ahachat_conn_id=ahachat_conn_id):
        user_id = str(extra["messenger_user_id"])
        if user_id not in seen:
            seen.add(user_id)
            rows.append({"user_id": user_id})
    return rows
