"""
What the docs site shows is tested, not copied.

- No page holds Python of its own: every Python block is a ``literalinclude`` of a file in
  ``docs/examples/`` (run by ``tests/unit/test_docs_examples.py``, on PostgreSQL by
  ``tests/integration/test_docs_examples_postgres.py``) or ``example_dags/`` (run by the
  example DAGs' tests and the demo), between markers that exist.
- Every file of ``docs/examples/`` is shown by a page and run by a ``test_docs_examples*.py``.
- The JSON blocks parse; the shell blocks name scripts, benchmarks and modules that exist; the
  connection URIs parse as ``ahachat`` connections.

The site itself is built with warnings as errors by ``./scripts/docs.sh`` (``scripts/test.sh`` runs
it), which also fails on an include whose file or marker is missing.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts)
#: A fenced block: its kind (a language, or a directive such as {literalinclude}), the rest of its
#: first line (a directive's argument), and its body.
FENCE = re.compile(r"^```(\{?[\w-]+\}?) ?([^\n]*)\n(.*?)^```", re.S | re.M)


def fenced(kind: str) -> list[tuple[Path, str]]:
    """The blocks of that kind in every page, each with its page: the argument line, then the body."""
    return [
        (page, f"{m.group(2)}\n{m.group(3)}" if m.group(2) else m.group(3))
        for page in PAGES
        for m in FENCE.finditer(page.read_text("utf-8"))
        if m.group(1) == kind
    ]


def includes() -> list[tuple[Path, Path, dict[str, str]]]:
    found = []
    for page, body in fenced("{literalinclude}"):
        target, *options = body.strip().splitlines()
        settings = {}
        for line in options:
            name, _, value = line.strip().strip(":").partition(": ")
            settings[name.strip(":")] = value.strip().strip('"')
        found.append((page, (page.parent / target.strip()).resolve(), settings))
    return found


def test_no_page_holds_python_of_its_own() -> None:
    inline = [str(page.relative_to(ROOT)) for page, _ in fenced("python")]
    assert not inline, f"include the code from a tested file instead: {inline}"


def test_every_include_is_a_tested_file_with_its_markers() -> None:
    assert includes()
    for page, target, settings in includes():
        assert target.parent in (DOCS / "examples", ROOT / "example_dags"), (page, target)
        text = target.read_text("utf-8")
        for option in ("start-after", "end-before"):
            if option in settings:
                assert settings[option] in text, (page, target.name, settings[option])


def test_every_example_is_shown_and_run() -> None:
    shown = {target.name for _, target, _ in includes()}
    run = "".join(path.read_text("utf-8") for path in (ROOT / "tests").rglob("test_docs_examples*.py"))
    for example in (DOCS / "examples").glob("*.py"):
        assert example.name in shown, f"{example.name} is shown by no page"
        assert f'"{example.stem}"' in run, f"{example.name} is not run by tests/*/test_docs_examples*.py"


@pytest.mark.parametrize(("page", "body"), fenced("json"), ids=lambda v: getattr(v, "name", ""))
def test_json_blocks_parse(page: Path, body: str) -> None:
    json.loads(body)


def test_shell_blocks_name_what_exists() -> None:
    blocks = "\n".join(body for _, body in fenced("bash"))
    assert blocks
    for script in re.findall(r"\./(scripts/[\w.-]+)", blocks):
        assert (ROOT / script).exists(), script
    for benchmark in re.findall(r"python (benchmarks/[\w.-]+\.py)", blocks):
        assert (ROOT / benchmark).exists(), benchmark
    for module in re.findall(r"python -m (airflow_provider_ahachat[\w.]*)", blocks):
        path = ROOT / module.replace(".", "/")
        assert path.exists() or path.with_suffix(".py").exists(), module


def test_connection_uris_in_the_docs_are_ahachat_connections() -> None:
    from airflow.models.connection import Connection

    uris = [
        uri for _, body in fenced("bash") for uri in re.findall(r"AIRFLOW_CONN_\w+='(ahachat://[^']+)'", body)
    ]
    assert uris
    for uri in uris:
        conn = Connection(uri=uri.replace("<BOT_TOKEN>", "token").replace("<SECRET>", "secret"))
        assert (conn.conn_type, conn.login) == ("ahachat", "12404829"), uri
