"""
Debian's ``chromium`` driven by Playwright, for the tests that use Airflow's UI as a person would.

- :func:`find_chromium`: the path of Debian's browser; the test is skipped without it (failed under
  CI). Playwright's Python package ships only its driver: no browser is ever downloaded.
- :func:`browser_page`: a headless page that reaches nothing but loopback, closed on exit.
- :func:`log_in`: sign in to Airflow's UI with the simple auth manager's form.
- :func:`screenshot`: keep a screenshot for the README when ``AHACHAT_SCREENSHOTS`` names a folder.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
#: The flags of a headless run that reaches nothing but loopback.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def find_chromium() -> str:
    """Debian's chromium: the test is skipped when it is missing, failed when it is missing under CI."""
    if shutil.which(CHROMIUM) is None:
        message = "Debian's chromium is not installed: apt-get install chromium (./scripts/test.sh does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


@contextlib.contextmanager
def browser_page(chromium: str, *, timeout: float = 30) -> Iterator[Any]:
    """
    A fresh headless page, closed with its browser on exit (also on failure).

    :param chromium: the browser's path (:func:`find_chromium`).
    :param timeout: seconds each Playwright action may wait by default.
    """
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            # The window of every screenshot: small enough that the README's PNGs stay small.
            page = browser.new_page(viewport={"width": 1100, "height": 640})
            page.set_default_timeout(timeout * 1000)
            yield page
        finally:
            browser.close()


def log_in(page: Any, url: str, username: str, password: str) -> None:
    """Sign in to Airflow's UI at ``url`` through its login form."""
    page.goto(f"{url}/")
    page.locator("input[name=username]").fill(username)
    page.locator("input[name=password]").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"^(?!.*/auth/login).*$"))


def screenshot(page: Any, name: str, **options: Any) -> None:
    """Keep a screenshot for the README when ``AHACHAT_SCREENSHOTS`` names a folder."""
    folder = os.environ.get("AHACHAT_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / name), **options)
