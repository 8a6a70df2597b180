"""
The README's one DAG runs, and what it names exists.

- its Python block runs with ``dag.test()`` against the sandbox, as the connection
  ``ahachat_default``: both customers get their own shipping update and the tag;
- it stays a page: at most 200 lines;
- every script, file and page it links to or tells the reader to run is in the repository.

The docs site's code is tested by ``tests/test_docs_examples.py`` and ``tests/test_docs.py``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_ahachat.sandbox import SandboxServer

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text("utf-8")
LAN = "3824547807572463"
MINH = "4102938475610293"


def blocks(language: str) -> list[str]:
    return [m.group(1) for m in re.finditer(rf"^```{language}\n(.*?)^```", README, re.S | re.M)]


def test_the_readme_fits_on_a_page() -> None:
    assert len(README.splitlines()) <= 200


def test_the_readme_has_one_dag() -> None:
    assert len(blocks("python")) == 1


@pytest.mark.usefixtures("airflow_db")
def test_the_readmes_dag_runs_on_the_sandbox(dag_runner: Any, sandbox: SandboxServer) -> None:
    (code,) = blocks("python")
    names: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), names)
    result = dag_runner(names["dag"], {"ahachat_default": sandbox.connection_uri})

    assert result.succeeded, result.summary()
    for user_id, order in ((LAN, "DH10231"), (MINH, "DH10232")):
        (entry,) = sandbox.outbox(user_id)
        assert (entry["block_name"], entry["attributes"]["order_id"]) == ("shipping_update", order)
        assert "da_giao_van" in sandbox.user(user_id)["tags"]
    assert sandbox.token not in result.log


def test_what_the_readme_names_exists() -> None:
    links = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", README)
    commands = re.findall(r"\./(scripts/[\w.-]+\.sh)", README)
    for path in [*links, *commands]:
        assert (ROOT / path).exists(), path
