"""
Which store of held messages Airflow's configuration names: a SQLite file on one machine by
default, a connection the user names for several, never Airflow's metadata database.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_ahachat.exceptions import AhaChatValidationError
from airflow_provider_ahachat.held.location import held_store, held_url
from airflow_provider_ahachat.held.messages import held_piece
from airflow_provider_ahachat.held.store import Customer, HeldStore, Hold

LAN = Customer("ahachat_default", "12404829", "3824547807572463")


@pytest.fixture(autouse=True)
def settings(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("HELD_CONN_ID", "HELD_PATH", "LEDGER_PATH"):
        monkeypatch.delenv(f"AIRFLOW__AHACHAT__{name}", raising=False)
    return monkeypatch


def roundtrip(store: HeldStore, text: str) -> list[str]:
    store.hold([Hold(LAN, "send_text", held_piece("send_text", {"text": text}))])
    return [h.piece().messages[0]["text"] for h in store.deliver(LAN, call="e")]


def test_one_machine_by_default_a_file_in_airflow_home(airflow_db: Any) -> None:
    home = Path(os.environ["AIRFLOW_HOME"]).resolve()
    assert held_url() == f"sqlite:///{home / 'ahachat' / 'held.sqlite3'}"
    assert roundtrip(held_store(), "default") == ["default"]
    assert (home / "ahachat" / "held.sqlite3").exists()
    assert held_store() is held_store()  # one per database in a process


def test_a_file_of_ones_choice(airflow_db: Any, settings: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings.setenv("AIRFLOW__AHACHAT__HELD_PATH", str(tmp_path / "shop" / "held.db"))
    assert held_url() == f"sqlite:///{tmp_path / 'shop' / 'held.db'}"
    assert roundtrip(held_store(), "chosen") == ["chosen"]


def test_a_ledger_on_object_storage_asks_for_a_database(
    airflow_db: Any, settings: pytest.MonkeyPatch
) -> None:
    settings.setenv("AIRFLOW__AHACHAT__LEDGER_PATH", "s3://aws_default@shop-ledger/ahachat")
    with pytest.raises(
        AhaChatValidationError, match=r"\[ahachat\] held_conn_id: the delivery ledger is on object"
    ):
        held_url()
    settings.setenv("AIRFLOW__AHACHAT__HELD_PATH", "/var/lib/ahachat/held.sqlite3")
    assert held_url() == "sqlite:////var/lib/ahachat/held.sqlite3"


def test_a_postgresql_connection_for_several_machines(
    airflow_db: Any, settings: pytest.MonkeyPatch, postgres: Any
) -> None:
    database = postgres.new_database()
    settings.setenv("AIRFLOW_CONN_HELD_DB", postgres.uri(database))
    settings.setenv("AIRFLOW__AHACHAT__HELD_CONN_ID", "held_db")
    url = held_url()
    assert (url.get_backend_name(), url.port, url.database) == ("postgresql", postgres.port, database)
    assert roundtrip(held_store(), "across machines") == ["across machines"]
    connection = postgres.connect(database)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT state, body FROM ahachat_held")
            assert cursor.fetchall() == [("delivered", '{"messages":[{"text":"across machines"}]}')]
    finally:
        connection.close()


def test_a_sqlite_connection(airflow_db: Any, settings: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings.setenv("AIRFLOW_CONN_HELD_FILE", f"sqlite:///{tmp_path / 'held-conn.db'}")
    settings.setenv("AIRFLOW__AHACHAT__HELD_CONN_ID", "held_file")
    assert roundtrip(held_store(), "by connection") == ["by connection"]
    assert (tmp_path / "held-conn.db").exists()


@pytest.mark.parametrize(
    ("conn_uri", "named"),
    [
        (None, "cannot use this connection: AirflowNotFoundException"),
        ("http://example.com", "must be a PostgreSQL or SQLite connection"),
    ],
)
def test_a_connection_that_is_no_database_is_refused(
    airflow_db: Any, settings: pytest.MonkeyPatch, conn_uri: str | None, named: str
) -> None:
    if conn_uri is not None:
        settings.setenv("AIRFLOW_CONN_NOT_A_DB", conn_uri)
    settings.setenv("AIRFLOW__AHACHAT__HELD_CONN_ID", "not_a_db")
    with pytest.raises(AhaChatValidationError) as caught:
        held_url()
    assert "[ahachat] held_conn_id ('not_a_db')" in str(caught.value)
    assert named in str(caught.value)


def test_airflows_metadata_database_is_refused(
    airflow_db: Any, settings: pytest.MonkeyPatch, postgres: Any, tmp_path: Path
) -> None:
    metadata_file = os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].removeprefix("sqlite:///")
    settings.setenv("AIRFLOW__AHACHAT__HELD_PATH", metadata_file)
    with pytest.raises(
        AhaChatValidationError, match=r"\[ahachat\] held_path: names Airflow's metadata database"
    ):
        held_url()
    settings.setenv("AIRFLOW_CONN_META", f"sqlite:///{metadata_file}")
    settings.setenv("AIRFLOW__AHACHAT__HELD_CONN_ID", "meta")
    with pytest.raises(AhaChatValidationError, match=r"\[ahachat\] held_conn_id: names Airflow's metadata"):
        held_url()
    # A metadata database on PostgreSQL, and the same cluster's other database for held messages.
    metadata, other = postgres.new_database(), postgres.new_database()
    settings.setenv(
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"postgresql://postgres@127.0.0.1:{postgres.port}/{metadata}"
    )
    settings.setenv("AIRFLOW_CONN_META", postgres.uri(metadata))
    with pytest.raises(AhaChatValidationError, match="metadata database"):
        held_url()
    settings.setenv("AIRFLOW_CONN_META", postgres.uri(other))
    assert held_url().database == other


def test_the_store_refuses_airflows_metadata_database_whatever_names_it(tmp_path: Path) -> None:
    """A task is not told the metadata database's address: the store looks at the tables themselves."""
    import sqlite3

    path = tmp_path / "airflow.db"
    with sqlite3.connect(path) as db:
        for table in ("alembic_version", "dag_run", "task_instance"):
            db.execute(f"CREATE TABLE {table} (id INTEGER)")
    db.close()
    store = HeldStore.sqlite(path)
    message = Hold(Customer("aha", "1", "2"), "send_text", held_piece("send_text", {"text": "x"}))
    with pytest.raises(AhaChatValidationError, match="Airflow's metadata database"):
        store.hold([message])
    with sqlite3.connect(path) as db:
        assert "ahachat_held" not in {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
    db.close()


def test_a_task_process_without_the_metadata_databases_address_still_finds_its_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Airflow gives a task process an address that is no URL; the store is found all the same."""
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "airflow-db-not-allowed:///")
    monkeypatch.setenv("AIRFLOW__AHACHAT__HELD_PATH", str(tmp_path / "held.sqlite3"))
    assert held_url() == f"sqlite:///{tmp_path / 'held.sqlite3'}"
