"""The asset of a bot event, and the customers of a run's triggering events."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from airflow_provider_ahachat.events import (
    ahachat_event,
    customer_events,
    event_uri,
    recipients_from_events,
    validate_event_name,
)


def test_the_asset_of_an_event() -> None:
    asset = ahachat_event("order_status", ahachat_conn_id="shop_bot")
    assert (asset.uri, asset.name, asset.group) == (
        "ahachat://shop_bot/order_status",
        "ahachat://shop_bot/order_status",
        "ahachat",
    )
    assert ahachat_event("order_status").uri == "ahachat://ahachat_default/order_status"
    assert ahachat_event("a.b-c_1") == ahachat_event("a.b-c_1")


@pytest.mark.parametrize("name", ["", "bad name", "đơn", "a/b", "..", "x" * 101, None, 3])
def test_a_bad_event_name_is_refused_with_the_rule(name: Any) -> None:
    with pytest.raises(ValueError, match=r"event: .*letters, digits"):
        validate_event_name(name)
    with pytest.raises(ValueError, match="event: "):
        ahachat_event(name)


@pytest.mark.parametrize("conn_id", ["", "a b", "a/b", "x" * 251])
def test_a_connection_id_the_url_cannot_name_is_refused(conn_id: str) -> None:
    with pytest.raises(ValueError, match="ahachat_conn_id: "):
        event_uri("order_status", conn_id)


def reference(uri: str, user_id: str, at: str, *, alias: str | None = None, **fields: Any) -> Any:
    """A triggering event as a task's context holds it."""
    from airflow.sdk.execution_time.comms import AssetEventDagRunReferenceResult

    return AssetEventDagRunReferenceResult.model_validate(
        {
            "asset": {"name": uri, "uri": uri, "extra": {}},
            "extra": {
                "messenger_user_id": user_id,
                "bot_id": "12404829",
                "conn_id": uri.split("/")[2],
                "event": uri.rsplit("/", 1)[1],
                "received_at": at,
                "fields": fields,
            },
            "source_task_id": None,
            "source_dag_id": None,
            "source_run_id": None,
            "source_map_index": None,
            "source_aliases": [{"name": alias}] if alias else [],
            "timestamp": at,
        }
    )


def test_every_event_of_a_batched_run_is_kept(airflow_db: Any) -> None:
    from airflow.sdk.execution_time.context import TriggeringAssetEventsAccessor

    status = "ahachat://bot/order_status"
    cancel = "ahachat://bot/cancel_order"
    events = TriggeringAssetEventsAccessor.build(
        [
            reference(status, "1", "2026-01-01T10:00:02+00:00", order_code="DH2"),
            reference(status, "2", "2026-01-01T10:00:01+00:00", order_code="DH1"),
            reference(status, "1", "2026-01-01T10:00:03+00:00", order_code="DH3", alias="orders"),
            reference(cancel, "3", "2026-01-01T10:00:04+00:00", order_code="DH4"),
            reference("s3://bucket/other", "9", "2026-01-01T10:00:00+00:00"),
        ]
    )
    every = customer_events(events)
    assert [(e["messenger_user_id"], e["fields"]["order_code"]) for e in every] == [
        ("2", "DH1"),
        ("1", "DH2"),
        ("1", "DH3"),
        ("3", "DH4"),
    ]
    assert [e["fields"]["order_code"] for e in customer_events(events, event="order_status")] == [
        "DH1",
        "DH2",
        "DH3",
    ]
    assert customer_events(events, ahachat_conn_id="elsewhere") == []
    assert recipients_from_events(events) == [{"user_id": "2"}, {"user_id": "1"}, {"user_id": "3"}]
    assert recipients_from_events(events, event="cancel_order") == [{"user_id": "3"}]


class UnhashableAsset:
    """An asset as task SDKs before 1.2 (Airflow 3.1) give it: equal by value, and unhashable."""

    __hash__ = None  # type: ignore[assignment]

    def __init__(self, uri: str) -> None:
        self.uri = uri

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UnhashableAsset) and other.uri == self.uri


class EventsByAsset(Mapping[Any, list[Any]]):
    """``triggering_asset_events`` keyed by unhashable assets, kept in a list as such a mapping must."""

    def __init__(self, batches: list[tuple[Any, list[Any]]]) -> None:
        self._batches = batches

    def __getitem__(self, key: Any) -> list[Any]:
        for asset, events in self._batches:
            if asset == key:
                return events
        raise KeyError(key)

    def __iter__(self) -> Iterator[Any]:
        return iter([asset for asset, _ in self._batches])

    def __len__(self) -> int:
        return len(self._batches)


@pytest.mark.parametrize(
    "key",
    [UnhashableAsset("ahachat://bot/order_status"), {"uri": "ahachat://bot/order_status"}, ["extra"]],
    ids=["asset", "dict", "list"],
)
def test_events_keyed_by_unhashable_assets_are_read_without_hashing_them(key: Any) -> None:
    def event(user_id: str, at: str) -> dict[str, Any]:
        return {
            "asset": {"uri": "ahachat://bot/order_status"},
            "extra": {"messenger_user_id": user_id, "event": "order_status", "received_at": at},
        }

    events = EventsByAsset([(key, [event("7", "b"), event("6", "a"), event("7", "c")])])
    assert [e["messenger_user_id"] for e in customer_events(events)] == ["6", "7", "7"]
    assert recipients_from_events(events, event="order_status") == [{"user_id": "6"}, {"user_id": "7"}]


def test_events_passed_through_xcom_as_plain_data() -> None:
    plain = [
        {"asset": {"uri": "ahachat://bot/e"}, "extra": {"messenger_user_id": "5", "received_at": "b"}},
        {"asset": {"uri": "ahachat://bot/e"}, "extra": {"messenger_user_id": "4", "received_at": "a"}},
        {"asset": {"uri": "ahachat://bot/e"}, "extra": {"no_user": True}},
    ]
    assert recipients_from_events(plain) == [{"user_id": "4"}, {"user_id": "5"}]
    assert recipients_from_events(None) == []


def test_dag_files_that_import_the_events_module_do_not_import_airflow_or_fastapi() -> None:
    code = (
        "import sys, airflow_provider_ahachat.events as e; "
        "print(sorted(m for m in ('airflow', 'fastapi', 'sqlalchemy') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"
