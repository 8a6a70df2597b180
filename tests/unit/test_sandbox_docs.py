"""What a person starting the sandbox by hand sees: the banner and the control API's docs page."""

from __future__ import annotations

import re
import time
from typing import Any

import requests

from airflow_provider_ahachat.sandbox import SandboxProcess


def test_the_docs_page_lists_the_control_api_and_needs_nothing_from_elsewhere(sandbox: Any) -> None:
    answer = requests.get(f"{sandbox.url}/_sandbox/docs", timeout=10)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    page = answer.text
    for route in ("GET /_sandbox/outbox", "PATCH /_sandbox/users/&lt;id&gt;", "POST /_sandbox/config"):
        assert route in page, route
    assert "<code>run_block</code>" in page  # the PATCH fields, as code
    # Offline: no script, stylesheet or image from another host; Swagger UI's CDN is not used.
    assert "<script" not in page
    assert not re.search(r"""(src|href)=["']?https?://""", page)
    # The schema stays available to programs.
    assert requests.get(f"{sandbox.url}/_sandbox/openapi.json", timeout=10).status_code == 200


def test_the_banner_names_the_connection_the_examples_use() -> None:
    process = SandboxProcess(conn_id="ahachat_sandbox")
    with process:
        url, uri = process.url, process.connection_uri
        deadline = time.monotonic() + 30
        while not any(line.startswith("Control API") for line in process.output):
            assert time.monotonic() < deadline, list(process.output)
            time.sleep(0.05)
        lines = list(process.output)
    assert lines[1].startswith("Bot 12404829 ") and lines[2].startswith(
        "Messenger's rules: as of December 2026"
    )
    assert lines[3:6] == [
        "The example DAGs use the connection ahachat_sandbox:",
        f"AIRFLOW_CONN_AHACHAT_SANDBOX='{uri}'",
        f"Control API: {url}/_sandbox/docs",
    ]


def test_the_command_line_defaults_to_the_examples_connection() -> None:
    from airflow_provider_ahachat.sandbox.__main__ import EXAMPLES_CONN_ID, build_parser

    assert build_parser().parse_args([]).conn_id == EXAMPLES_CONN_ID == "ahachat_sandbox"
