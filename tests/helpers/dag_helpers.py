"""
Helpers shared by the tests that run the provider's operators inside Airflow against the sandbox.

- :func:`new_dag`: a DAG whose tasks use the connection :data:`CONN` and never retry.
- :func:`run_without_token`: run a DAG and check that the bot token appears nowhere it could leak;
  :func:`run_with_ledger`: the same, the ledger a test keeps under its ``tmp_path`` checked too.
- :func:`report`: the per-recipient report a bulk summary points to.
- :func:`operator_for`: the operator class of an action of the registry.
- :func:`sqlite_table`, :func:`run_sql_dag`: a SQLite file of one table, and a DAG of the SQL
  transfer run against it (or any database) and the sandbox; :func:`shop_db`: the shop's orders.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from airflow_provider_ahachat.sandbox import SandboxServer

#: The AhaChat connection ID the tests' tasks use.
CONN = "aha"
#: The SQL connection ID of the SQL transfer's tests.
SHOP = "shop_db"


def new_dag(dag_id: str, **kwargs: Any) -> Any:
    """A DAG with no schedule whose tasks use :data:`CONN` and never retry."""
    from airflow.sdk import DAG

    return DAG(dag_id, schedule=None, default_args={"ahachat_conn_id": CONN, "retries": 0}, **kwargs)


def run_without_token(
    dag_runner: Callable[..., Any],
    dag: Any,
    sandbox: SandboxServer,
    conns: Mapping[str, Any] | None = None,
    *,
    files: Iterable[Path] = (),
    **kwargs: Any,
) -> Any:
    """
    Run ``dag`` and check that the sandbox's token is nowhere: log, XCom, task errors, ``files``.

    :param conns: connection ID to URI or fields; :data:`CONN` to the sandbox by default.
    :param files: folders (searched through) and files to check as well, such as a ledger.
    :param kwargs: passed on to ``dag_runner``.
    """
    result = dag_runner(dag, dict(conns) if conns is not None else {CONN: sandbox.connection_uri}, **kwargs)
    texts = [result.log, json.dumps(result.xcoms, default=str, ensure_ascii=False)]
    texts += [task.error_text or "" for task in result.tasks.values()]
    for path in files:
        found = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        texts += [p.read_text(encoding="utf-8") for p in found]
    for text in texts:
        assert sandbox.token not in text
    return result


def run_with_ledger(
    dag_runner: Callable[..., Any],
    dag: Any,
    sandbox: SandboxServer,
    tmp_path: Path | None = None,
    **kwargs: Any,
) -> Any:
    """
    :func:`run_without_token`, the ledger at ``tmp_path / "ledger"`` checked too when there is one.

    :param tmp_path: the test's folder; none (or no ledger in it) for a DAG that keeps no ledger there.
    :param kwargs: passed on to :func:`run_without_token` (``conns``, then ``dag_runner``'s own).
    """
    files = [tmp_path / "ledger"] if tmp_path is not None and (tmp_path / "ledger").exists() else []
    return run_without_token(dag_runner, dag, sandbox, files=files, **kwargs)


def report(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The per-recipient report a bulk summary points to, one dict per line."""
    return [json.loads(line) for line in Path(summary["report"]).read_text(encoding="utf-8").splitlines()]


def operator_for(action: str) -> Any:
    """The operator class of ``action``: the one operator of the provider that names it."""
    from airflow_provider_ahachat.operators.ahachat import AhaChatAudienceOperator, AhaChatBaseOperator

    def every(cls: type) -> Iterable[type]:
        sub: type
        for sub in cls.__subclasses__():
            yield sub
            yield from every(sub)

    named = {cls for cls in every(AhaChatBaseOperator) if cls.__dict__.get("action") == action}
    assert len(named) == 1, f"the action {action!r} has {len(named)} operators: {named}"
    (found,) = named
    assert issubclass(found, AhaChatAudienceOperator) or action == "find_user"
    return found


def sqlite_table(path: Path, create: str, rows: Iterable[Sequence[Any]]) -> Path:
    """A SQLite file at ``path`` holding one table: ``create`` it, then insert ``rows``."""
    with sqlite3.connect(path) as db:
        db.execute(create)
        rows = list(rows)
        if rows:
            db.executemany(f"INSERT INTO {create.split()[2]} VALUES ({', '.join('?' * len(rows[0]))})", rows)
    db.close()
    return path


def shop_db(path: Path, orders: Iterable[tuple[Any, ...]]) -> Path:
    """A shop database: ``orders`` rows of (user_id, phone, ma_don, ma_van_don, ten, shipped_on, total)."""
    create = (
        "CREATE TABLE orders (user_id TEXT, phone TEXT, ma_don TEXT, ma_van_don TEXT, ten TEXT, "
        "shipped_on DAY, total DECIMAL)"
    )
    return sqlite_table(path, create, orders)


def run_sql_dag(
    dag_runner: Callable[..., Any],
    dag: Any,
    sandbox: SandboxServer,
    shop_uri: str | None,
    tmp_path: Path,
    **kwargs: Any,
) -> Any:
    """
    Run a DAG of the SQL transfer with the sandbox and the database :data:`SHOP` at ``shop_uri``
    (none for a DAG that reads a file); the token must appear nowhere, the ledger under ``tmp_path``
    included.
    """
    conns = {CONN: sandbox.connection_uri, **({SHOP: shop_uri} if shop_uri else {})}
    result = run_without_token(dag_runner, dag, sandbox, conns, files=[tmp_path / "ledger"], **kwargs)
    for journal in tmp_path.rglob("*.jsonl"):  # reports and journals kept anywhere else
        assert sandbox.token not in journal.read_text(encoding="utf-8")
    return result


def run_sqlite_dag(
    dag_runner: Callable[..., Any], dag: Any, sandbox: SandboxServer, db: Path, tmp_path: Path, **kwargs: Any
) -> Any:
    """:func:`run_sql_dag` with the database :data:`SHOP` the SQLite file ``db``."""
    # The SQLite provider reads ``sqlite://`` + an absolute path (``sqlite:////abs`` is refused).
    return run_sql_dag(dag_runner, dag, sandbox, f"sqlite://{db}", tmp_path, **kwargs)


def ahachat_lines(log: str) -> list[str]:
    """The provider's own lines of a task log."""
    return [line for line in log.splitlines() if "] AhaChat" in line]


def assert_nothing_sent(sandbox: SandboxServer) -> None:
    """The sandbox received no request and sent no message."""
    assert sandbox.stats()["total"] == 0
    assert sandbox.outbox() == []


def sql_transfer(tmp_path: Path, **kwargs: Any) -> Any:
    """A ``SqlToAhaChatOperator`` reading the database :data:`SHOP`, its ledger under ``tmp_path``."""
    from airflow_provider_ahachat.transfers.sql_to_ahachat import SqlToAhaChatOperator

    return SqlToAhaChatOperator(sql_conn_id=SHOP, ledger_path=str(tmp_path / "ledger"), **kwargs)
