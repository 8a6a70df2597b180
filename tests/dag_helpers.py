"""
Helpers shared by the tests that run the provider's operators inside Airflow against the sandbox.

- :func:`new_dag`: a DAG whose tasks use the connection :data:`CONN` and never retry.
- :func:`run_without_token`: run a DAG and check that the bot token appears nowhere it could leak.
- :func:`report`: the per-recipient report a bulk summary points to.
- :func:`operator_for`: the operator class of an action of the registry.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from airflow_provider_ahachat.sandbox import SandboxServer

#: The AhaChat connection ID the tests' tasks use.
CONN = "aha"


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
