"""
An example DAG switched on, triggered and watched to success in Airflow's UI, in a real browser.

Airflow runs as ``scripts/ui.sh`` runs it: ``airflow standalone`` on a free loopback port, in a
throw-away home, with the example DAGs folder, an admin who signs in with a password, the
connection ``ahachat_sandbox`` (the sandbox of this test process) and ``shop_db`` (a SQLite shop
database). New DAGs start paused, as they do for a user. Debian's ``chromium`` signs in, opens
``example_ahachat_shipping_update``, switches it on with its toggle, presses **Trigger**, and waits
until the run's page says **Success**. Then the sandbox's records say what was delivered.

Switching a scheduled DAG on makes the scheduler start its latest scheduled run too, as it does for
a user: the sandbox's records are checked against every run the DAG had, each of them a success.

Set ``AHACHAT_SCREENSHOTS`` to a folder to keep the screenshot the README shows (``docs/``).
"""

from __future__ import annotations

import json
import re
import secrets
import sqlite3
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.airflow_processes import AirflowProcesses
from helpers.browser_helpers import browser_page, find_chromium, log_in, screenshot

from airflow_provider_ahachat.sandbox import SandboxServer

# Airflow standalone on a loaded 2-core machine takes minutes to start; the run itself about one.
pytestmark = [pytest.mark.browser, pytest.mark.timeout(1500)]

EXAMPLE_DAGS = Path(__file__).resolve().parents[2] / "example_dags"
DAG_ID = "example_ahachat_shipping_update"
USERNAME = "admin"
LAN = "3824547807572463"  # the VIP: +84 908 071 111
MINH = "4102938475610293"  # 0912.345.678
BAO = "5310298476123984"  # 0903-456-789, last wrote 3 days ago: outside Messenger's window
#: What one run of the DAG delivers: a broadcast to each of the two customers inside the 24-hour
#: window (Bảo's order is saved on him, not sent), then the VIP's text and dynamic message.
ONE_RUN = Counter([("broadcast", LAN), ("broadcast", MINH), ("text", LAN), ("dynamic", LAN)])
#: Seconds a run may take to succeed once triggered, on a loaded machine.
RUN_TIMEOUT = 600.0


@pytest.fixture(scope="module")
def chromium() -> str:
    return find_chromium()


@pytest.fixture
def airflow(tmp_path: Path, sandbox: SandboxServer) -> Iterator[tuple[AirflowProcesses, str]]:
    """``airflow standalone`` set up like ``scripts/ui.sh``; the processes and the admin's password."""
    home = tmp_path / "airflow"
    home.mkdir()
    password = secrets.token_urlsafe(12)
    (home / "passwords.json").write_text(json.dumps({USERNAME: password}))
    shop = tmp_path / "shop.db"
    with sqlite3.connect(shop) as db:
        db.execute("CREATE TABLE orders (order_id TEXT, messenger_user_id TEXT, shipped_on TEXT)")
        db.execute("INSERT INTO orders VALUES ('DH10231', ?, date('now', '-1 day'))", (LAN,))
    ahachat = {
        "conn_type": "ahachat",
        "login": sandbox.bot_id,
        "password": sandbox.token,
        "extra": {"base_url": sandbox.url},
    }
    env = {
        "AIRFLOW_CONN_AHACHAT_SANDBOX": json.dumps(ahachat),
        "AIRFLOW_CONN_SHOP_DB": json.dumps({"conn_type": "sqlite", "host": str(shop)}),
        # A user's Airflow: DAGs start paused, and the UI asks who you are.
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USERNAME}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
        # As ui.sh: SQLite writers wait up to 60 s for each other, not 5, lest the scheduler stop.
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}?timeout=60",
    }
    with AirflowProcesses(home, dags_folder=EXAMPLE_DAGS, env=env) as processes:
        yield processes, password


def api(airflow: AirflowProcesses, password: str, path: str) -> Any:
    """``GET path`` on Airflow's public API as the admin; the JSON answer."""
    request = urllib.request.Request(
        f"{airflow.url}/auth/token",
        data=json.dumps({"username": USERNAME, "password": password}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        token = json.loads(answer.read())["access_token"]
    request = urllib.request.Request(f"{airflow.url}{path}", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def task_states(airflow: AirflowProcesses, password: str, run_id: str) -> list[tuple[str, int, str]]:
    """The run's task instances: ``(task_id, map_index, state)``, for a failure's message."""
    path = f"/api/v2/dags/{DAG_ID}/dagRuns/{urllib.parse.quote(run_id)}/taskInstances?limit=100"
    answer = api(airflow, password, path)
    return sorted((t["task_id"], t["map_index"], t["state"]) for t in answer["task_instances"])


def wait_for_run_page(page: Any, url: str, run_id: str, airflow: AirflowProcesses, password: str) -> None:
    """Reload the run's page until the state badge beside its title says Success; fail on Failed."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    title = page.get_by_role("heading", name=run_id, exact=True)
    badge = title.locator("xpath=..").get_by_test_id("state-badge")
    deadline = time.monotonic() + RUN_TIMEOUT
    while True:
        page.goto(url)
        try:
            badge.get_by_text(re.compile(r"^\s*(Success|Failed)\s*$")).wait_for(timeout=15_000)
        except PlaywrightTimeout:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the run {run_id} did not succeed within {RUN_TIMEOUT:.0f}s: "
                    f"{task_states(airflow, password, run_id)}\n{airflow.log_tail()}"
                ) from None
            continue
        state = badge.inner_text().strip()
        assert state == "Success", f"the run {run_id} failed: {task_states(airflow, password, run_id)}"
        return


def test_switch_on_trigger_and_watch_a_run_succeed(
    chromium: str, airflow: tuple[AirflowProcesses, str], sandbox: SandboxServer
) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    processes, password = airflow
    url = processes.url
    lan_before = sandbox.user(LAN)
    assert "cho_giao_hang" in lan_before["tags"] and "gio_hang" in lan_before["attributes"]

    with browser_page(chromium, timeout=60) as page:
        log_in(page, url, USERNAME, password)
        # The DAG processor may not have parsed the examples yet: reload until the DAG is there.
        toggle = page.get_by_test_id("toggle-pause")
        deadline = time.monotonic() + 600
        while True:
            page.goto(f"{url}/dags/{DAG_ID}")
            try:
                toggle.wait_for(timeout=15_000)
                break
            except PlaywrightTimeout:
                if time.monotonic() > deadline:
                    raise
        switch = toggle.locator("input[type=checkbox]")
        assert not switch.is_checked(), "a new DAG should start paused"
        # The switch flips on the screen at once; Airflow hears of it by a PATCH that a busy machine
        # may answer seconds later: wait for that answer before reloading.
        with page.expect_response(
            lambda r: r.request.method == "PATCH" and f"/dags/{DAG_ID}" in r.url, timeout=120_000
        ) as patched:
            toggle.click()
        assert patched.value.ok, f"switching the DAG on: {patched.value.status} {patched.value.text()[:300]}"
        page.reload()  # switched on in Airflow, not only on the screen
        toggle.wait_for()
        try:  # the page may draw the switch before it has read the DAG's state
            page.wait_for_function(
                "e => e.checked", arg=toggle.locator("input[type=checkbox]").element_handle()
            )
        except PlaywrightTimeout:
            raise AssertionError("the DAG is still paused after switching it on") from None

        page.get_by_role("button", name="Trigger Dag").click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_role("button", name="Trigger", exact=True).click()
        # The dialog closes once Airflow has created the run: on a loaded machine, with SQLite
        # writers waiting for each other, that can take a minute or more.
        try:
            dialog.wait_for(state="hidden", timeout=240_000)
        except PlaywrightTimeout:
            raise AssertionError(
                f"the Trigger dialog stayed open; on screen: {page.get_by_role('status').all_inner_texts()}"
                f"\n{processes.log_tail()}"
            ) from None

        # The manual run, as the Runs tab lists it.
        page.goto(f"{url}/dags/{DAG_ID}/runs")
        link = page.locator(f"a[href*='/dags/{DAG_ID}/runs/manual__']").first
        link.wait_for()
        run_path = str(link.get_attribute("href"))
        run_id = urllib.parse.unquote(run_path.rstrip("/").rsplit("/", 1)[-1])
        assert run_id.startswith("manual__"), run_path
        wait_for_run_page(page, f"{url}{run_path}", run_id, processes, password)
        page.get_by_text("10 Task Instances").wait_for()  # 10 tasks, none mapped
        screenshot(page, "dag-run-success.png")
        assert sandbox.token not in page.content()

    # Every run the DAG had (the manual one, and the scheduled one that switching it on started),
    # finished and succeeded; then the sandbox holds exactly what they delivered.
    def runs_done() -> list[dict[str, Any]] | None:
        runs = api(processes, password, f"/api/v2/dags/{DAG_ID}/dagRuns?limit=100")["dag_runs"]
        return runs if all(r["state"] in ("success", "failed") for r in runs) else None

    deadline = time.monotonic() + RUN_TIMEOUT
    while not (runs := runs_done()):
        assert time.monotonic() < deadline, "the DAG's other runs did not finish"
        time.sleep(2)
    states = {r["dag_run_id"]: r["state"] for r in runs}
    assert run_id in states and set(states.values()) == {"success"}, states

    delivered = Counter((e["kind"], e["messenger_user_id"]) for e in sandbox.outbox())
    assert delivered == Counter({key: count * len(runs) for key, count in ONE_RUN.items()}), delivered
    texts = [e for e in sandbox.outbox(LAN) if e["kind"] == "text"]
    assert all("Cảm ơn Lan đã luôn ủng hộ shop!" in json.dumps(e, ensure_ascii=False) for e in texts), texts
    lan = sandbox.user(LAN)
    assert "da_giao_van" in lan["tags"] and "cho_giao_hang" not in lan["tags"], lan["tags"]
    assert "gio_hang" not in lan["attributes"], lan["attributes"]
    assert lan["attributes"]["order_status"] == "dang_giao"
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", lan["attributes"]["shipped_on"]), lan["attributes"]
    assert sandbox.user(BAO)["attributes"]["tracking_number"] == "GHN8123458VN"
