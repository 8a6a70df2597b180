"""
The connection form and its Test button in a real browser, against a real Airflow API server.

Debian's ``chromium`` driven by Playwright (its Python package ships only the driver; no browser is
ever downloaded), against ``airflow api-server`` in a throw-away home on a free port, and the
sandbox of this test process: log in, add AhaChat connections through the form, press each row's
Test button and read the answer the UI shows.

Set ``AHACHAT_SCREENSHOTS`` to a folder to keep the screenshots the README shows (``docs/``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from helpers.airflow_ui import USERNAME, AirflowApiServer
from helpers.browser_helpers import browser_page, find_chromium, log_in, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]

BOT = "12404829"


@pytest.fixture(scope="module")
def chromium() -> str:
    return find_chromium()


@pytest.fixture(scope="module")
def airflow_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowApiServer]:
    with AirflowApiServer(tmp_path_factory.mktemp("airflow-ui-home")) as server:
        yield server


@pytest.fixture
def page(chromium: str, airflow_ui: AirflowApiServer) -> Iterator[Any]:
    """A logged-in browser page on the Connections list."""
    with browser_page(chromium) as page:
        log_in(page, airflow_ui.url, USERNAME, airflow_ui.password)
        page.goto(f"{airflow_ui.url}/connections")
        yield page


def add_connection(
    page: Any, conn_id: str, *, bot_id: str, token: str, base_url: str, shot: str = ""
) -> None:
    """Fill the Add Connection form as a person would, and save it."""
    page.get_by_role("button", name="Add Connection").click()
    page.locator("input[name=connection_id]").fill(conn_id)
    page.locator("input[role=combobox]").last.click(force=True)
    page.keyboard.type("AhaChat")
    page.keyboard.press("Enter")
    # The AhaChat form: Bot ID and Bot Token first; no Host, Port or Schema.
    page.locator("input[name=login]").fill(bot_id)
    page.locator("input[name=password]").fill(token)
    for hidden in ("host", "port", "schema"):
        assert page.locator(f"input[name={hidden}]").count() == 0, f"the form shows {hidden}"
    if shot:
        screenshot(page, shot)
    if base_url:
        page.get_by_text("Extra Fields", exact=True).click()
        page.locator("input[name=element_base_url]").fill(base_url)
        if shot:
            screenshot(page, shot.replace(".png", "-base-url.png"))
    page.get_by_role("button", name="Save").click()
    page.get_by_role("cell", name=conn_id, exact=True).wait_for()


def press_test(page: Any, conn_id: str, *, timeout: float = 30) -> str:
    """Press the Test button of ``conn_id``'s row; return the text of the answer the UI shows."""
    row = page.get_by_role("row").filter(has=page.get_by_role("cell", name=conn_id, exact=True))
    toasts = page.get_by_role("status")
    before = set(toasts.all_inner_texts())
    row.get_by_role("button", name="Test Connection").click()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = [text for text in toasts.all_inner_texts() if text not in before and "Test Connection" in text]
        if new:
            return str(new[0])
        page.wait_for_timeout(200)
    raise AssertionError(
        f"no answer to Test of {conn_id} within {timeout:g}s; on screen: {toasts.all_inner_texts()}"
    )


def test_add_a_connection_and_press_test(page: Any, sandbox: Any) -> None:
    add_connection(
        page,
        "ahachat_sandbox",
        bot_id=BOT,
        token=sandbox.token,
        base_url=sandbox.url,
        shot="connection-form.png",
    )
    answer = press_test(page, "ahachat_sandbox")
    assert "Test Connection Successful" in answer, answer
    assert f"Connected to AhaChat bot {BOT} (Shop Thời Trang Lan Anh) at {sandbox.url}." in answer, answer
    screenshot(page, "test-success.png")
    # The answer is the sandbox's: it was asked about the bot, with the token it knows.
    checks = [r for r in sandbox.request_log(limit=100) if r["path"] == f"/api/bots/{BOT}"]
    assert checks and all(r["status"] == 200 for r in checks), sandbox.request_log(limit=10)

    add_connection(page, "ahachat_wrong_token", bot_id=BOT, token="e" * 64, base_url=sandbox.url)
    answer = press_test(page, "ahachat_wrong_token")
    assert "Test Connection Failed" in answer, answer
    assert "AhaChat refused the Bot Token for this Bot ID." in answer, answer
    assert "Bad Request" not in answer
    screenshot(page, "test-refused.png")

    # The real service's connection: an empty Base URL, which Airflow 3.3.2 stores without a port.
    # Whether https://ahachat.com is reachable from here or not, the answer is in words.
    add_connection(page, "ahachat_default", bot_id=BOT, token="f" * 64, base_url="")
    answer = press_test(page, "ahachat_default")
    assert "Test Connection Failed" in answer, answer
    assert ("AhaChat refused the Bot Token" in answer) or (
        "Could not reach AhaChat at https://ahachat.com" in answer
    )
    assert "Bad Request" not in answer and "differs from the stored connection" not in answer

    assert sandbox.token not in page.content()
