"""The hook: connection to client, the connection form Airflow shows, and the provider's registration."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

import pytest

from airflow_provider_ahachat.hooks.ahachat import base_url_from_connection

BOT = "12404829"
TOKEN = "0f3c9a7e5b1d4f2a8c6e0b9d7f5a3c1e2b4d6f8a0c2e4b6d8f0a2c4e6b8d0f2a"


@pytest.mark.parametrize(
    ("host", "port", "schema", "expected"),
    [
        (None, None, None, "https://ahachat.com"),
        ("", 8790, "http", "https://ahachat.com"),
        ("127.0.0.1", 8790, "http", "http://127.0.0.1:8790"),
        ("127.0.0.1", None, None, "https://127.0.0.1"),
        ("http://127.0.0.1:8790", None, "", "http://127.0.0.1:8790"),
        ("http://127.0.0.1", 8790, "https", "http://127.0.0.1:8790"),
        ("https://proxy.example.com/ahachat/", None, None, "https://proxy.example.com/ahachat"),
        ("ahachat.com", 443, "https", "https://ahachat.com:443"),
    ],
)
def test_base_url_from_connection(host: Any, port: Any, schema: Any, expected: str) -> None:
    assert base_url_from_connection(host, port, schema) == expected


def test_client_from_connection_fields_and_extras(airflow_db: Any) -> None:
    from airflow.sdk import Connection

    from airflow_provider_ahachat.hooks.ahachat import AhaChatHook

    conn = Connection(
        conn_id="aha",
        conn_type="ahachat",
        login=BOT,
        password=TOKEN,
        host="127.0.0.1",
        port=8790,
        schema="http",
        extra=json.dumps({"timeout": "12", "connect_timeout": 3, "max_retries": 2}),
    )
    hook = AhaChatHook(ahachat_conn_id="aha", retry_unknown_outcome=True)
    client = hook.client_from_connection(conn)
    assert (client.bot_id, client.base_url, client.timeout) == (BOT, "http://127.0.0.1:8790", (3.0, 12.0))
    assert client.retry.max_retries == 2
    assert client.retry.retry_unknown_outcome is True
    assert TOKEN not in repr(client) + repr(hook)


def test_uri_form_of_the_real_service(airflow_db: Any) -> None:
    from airflow.sdk import Connection

    from airflow_provider_ahachat.hooks.ahachat import AhaChatHook

    conn = Connection.from_uri(f"ahachat://{BOT}:{TOKEN}@", conn_id="ahachat_default")
    client = AhaChatHook().client_from_connection(conn)
    assert (client.bot_id, client.base_url) == (BOT, "https://ahachat.com")


@pytest.mark.parametrize(
    ("login", "password", "extra", "problem"),
    [
        ("", TOKEN, None, "Bot ID (login) is empty"),
        (BOT, "", None, "Bot Token (password) is empty"),
        (
            BOT,
            TOKEN,
            {"timeout": "soon"},
            "extra field 'timeout' must be a number of seconds above 0, got 'soon'",
        ),
        (
            BOT,
            TOKEN,
            {"connect_timeout": 0},
            "extra field 'connect_timeout' must be a number of seconds above 0",
        ),
        (
            BOT,
            TOKEN,
            {"max_retries": 2.5},
            "extra field 'max_retries' must be a whole number, 0 or more, got 2.5",
        ),
    ],
)
def test_incomplete_connections_are_explained(airflow_db: Any, login, password, extra, problem) -> None:
    from airflow.sdk import Connection

    from airflow_provider_ahachat.exceptions import AhaChatValidationError
    from airflow_provider_ahachat.hooks.ahachat import AhaChatHook

    conn = Connection(
        conn_id="aha", conn_type="ahachat", login=login, password=password, extra=json.dumps(extra or {})
    )
    with pytest.raises(AhaChatValidationError, match=re.escape(problem)):
        AhaChatHook(ahachat_conn_id="aha").client_from_connection(conn)


def test_the_ui_reads_the_connection_form_from_provider_info(airflow_db: Any) -> None:
    """The API server's connection hook metadata, which the UI's connection form is built from."""
    from airflow.api_fastapi.app import create_app, get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from fastapi.testclient import TestClient

    app = create_app("core")
    token = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username="admin", role="ADMIN"))
    with TestClient(app) as api:
        answer = api.get("/ui/connections/hook_meta", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text
    (meta,) = [m for m in answer.json() if m["connection_type"] == "ahachat"]
    assert meta["hook_name"] == "AhaChat"
    assert meta["hook_class_name"] == "airflow_provider_ahachat.hooks.ahachat.AhaChatHook"
    standard = meta["standard_fields"]
    assert (standard["login"]["title"], standard["password"]["title"]) == ("Bot ID", "Bot Token")
    assert (standard["host"]["title"], standard["url_schema"]["title"]) == ("Base URL", "Scheme")
    extra = meta["extra_fields"]
    assert set(extra) == {
        "timeout",
        "connect_timeout",
        "max_retries",
        "rate_limit",
        "concurrency",
        "rate_limit_redis_conn_id",
        *WEBHOOK_FIELDS,
        "approval_secret",
        "endpoints",
    }
    assert extra["timeout"]["schema"]["title"] == "Read timeout (seconds)"
    assert extra["endpoints"]["schema"]["title"] == "Endpoint overrides (JSON)"
    assert extra["max_retries"]["schema"]["type"] == ["integer", "null"]


#: The receiver's settings (issue 11), in the connection's extra.
WEBHOOK_FIELDS = (
    "webhook_secret",
    "webhook_enabled",
    "webhook_user_id_field",
    "webhook_replies",
    "webhook_events_per_minute",
)


def test_the_webhook_secret_is_a_masked_field(airflow_db: Any) -> None:
    from airflow.providers_manager import ProvidersManager

    widgets = ProvidersManager().connection_form_widgets
    assert widgets["extra__ahachat__webhook_secret"].is_sensitive
    assert not widgets["extra__ahachat__webhook_replies"].is_sensitive


def test_hook_methods_describe_the_same_form(airflow_db: Any) -> None:
    from airflow_provider_ahachat.get_provider_info import CONN_FIELDS, UI_FIELD_BEHAVIOUR
    from airflow_provider_ahachat.hooks.ahachat import AhaChatHook

    behaviour = AhaChatHook.get_ui_field_behaviour()
    assert behaviour["relabeling"] == UI_FIELD_BEHAVIOUR["relabeling"]
    assert behaviour["hidden_fields"] == ["extra"]
    assert set(CONN_FIELDS) == {
        "timeout",
        "connect_timeout",
        "max_retries",
        "rate_limit",
        "concurrency",
        "rate_limit_redis_conn_id",
        *WEBHOOK_FIELDS,
        "approval_secret",
        "endpoints",
    }


def run_airflow(*args: str) -> Any:
    """Run the ``airflow`` command line with ``--output json``; return the JSON it printed."""
    result = subprocess.run(
        [sys.executable, "-m", "airflow", *args, "--output", "json"],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("[")]
    return json.loads(line)


def test_airflow_discovers_the_provider(airflow_db: Any) -> None:
    providers = run_airflow("providers", "list")
    assert {"package_name": "airflow-provider-ahachat", "version": "0.1.0"}.items() <= {
        k: v for p in providers if p["package_name"] == "airflow-provider-ahachat" for k, v in p.items()
    }.items()
    hooks = run_airflow("providers", "hooks")
    ahachat = [h for h in hooks if h["connection_type"] == "ahachat"]
    assert ahachat, hooks
    assert ahachat[0]["class"] == "airflow_provider_ahachat.hooks.ahachat.AhaChatHook"


def test_airflow_registers_the_sensor_trigger_and_notifier(airflow_db: Any) -> None:
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    assert "airflow_provider_ahachat.notifications.ahachat.AhaChatNotifier" in manager.notification
    triggers = {t.trigger_class_name: t.package_name for t in manager.trigger}
    assert triggers["airflow_provider_ahachat.triggers.ahachat"] == "airflow-provider-ahachat"


def test_importing_what_dag_files_import_pulls_in_nothing_heavy() -> None:
    """
    The operators, sensor, trigger and notifier modules import nothing heavy beyond what Airflow
    itself imports (``import airflow.sdk`` already imports ``httpx``, for the Task SDK's own API
    client, so every module is checked against what Airflow alone has imported).
    """
    heavy = (
        "fastapi",
        "uvicorn",
        "starlette",
        "requests",
        "httpx",
        "airflow_provider_ahachat.sandbox",
        "airflow_provider_ahachat.client",
        "airflow_provider_ahachat.async_client",
        "airflow_provider_ahachat.bulk",
        "sqlite3",
    )
    modules = [
        f"airflow_provider_ahachat.{kind}.ahachat"
        for kind in ("operators", "sensors", "triggers", "notifications")
    ] + ["airflow_provider_ahachat.transfers.sql_to_ahachat"]
    code = (
        "import importlib, json, sys; import airflow.sdk, airflow.triggers.base\n"
        f"heavy = {heavy!r}; before = {{m for m in heavy if m in sys.modules}}; found = {{}}\n"
        f"for module in {modules!r}:\n"
        "    importlib.import_module(module)\n"
        "    found[module] = sorted(m for m in heavy if m in sys.modules and m not in before)\n"
        "print(json.dumps(found))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {module: [] for module in modules}


def test_test_connection_in_words_a_person_understands(airflow_db: Any, sandbox: Any, monkeypatch) -> None:
    from airflow_provider_ahachat.hooks.ahachat import AhaChatHook
    from airflow_provider_ahachat.sandbox.server import connection_uri

    cases = {
        "good": sandbox.connection_uri,
        "wrong_token": connection_uri(sandbox.url, sandbox.bot_id, "e" * 64),
        "unknown_bot": connection_uri(sandbox.url, "999", sandbox.token),
    }
    for conn_id, uri in cases.items():
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", uri)
    answers = {conn_id: AhaChatHook(ahachat_conn_id=conn_id).test_connection() for conn_id in cases}

    assert answers["good"] == (
        True,
        f"Connected to AhaChat bot 12404829 (Shop Thời Trang Lan Anh) at {sandbox.url}.",
    )
    assert answers["wrong_token"][0] is False
    assert "refused the Bot Token" in answers["wrong_token"][1]
    assert answers["unknown_bot"] == (
        False,
        "AhaChat knows no bot with this Bot ID. Copy it again from the bot's Settings in AhaChat.",
    )
    assert all(sandbox.token not in message for _, message in answers.values())


def test_airflow_connections_test_uses_it(airflow_db: Any, sandbox: Any) -> None:
    import os

    from airflow_provider_ahachat.sandbox.server import connection_uri

    def connections_test(uri: str) -> str:
        env = {**os.environ, "AIRFLOW__CORE__TEST_CONNECTION": "Enabled", "AIRFLOW_CONN_AHACHAT_DEFAULT": uri}
        result = subprocess.run(
            [sys.executable, "-m", "airflow", "connections", "test", "ahachat_default"],
            capture_output=True,
            text=True,
            timeout=180,
            env=env,
        )
        return result.stdout + result.stderr

    good = connections_test(sandbox.connection_uri)
    assert "Connection success!" in good, good
    bad = connections_test(connection_uri(sandbox.url, sandbox.bot_id, "e" * 64))
    assert "Connection failed!" in bad, bad
    assert "AhaChat refused the Bot Token for this Bot ID" in bad
    assert sandbox.token not in good + bad


def test_the_hook_registers_the_token_with_the_secret_masker(airflow_db: Any) -> None:
    from airflow.sdk import Connection
    from airflow.sdk.log import redact

    from airflow_provider_ahachat.hooks.ahachat import AhaChatHook

    token = "9" * 60 + "abcd"
    line = f"POST /api/bots/{BOT}/users/1/send?ahachat_token={token}"
    assert token in str(redact(line))  # not yet known to the masker
    # A connection built in memory, not fetched: only the hook can have registered the token.
    conn = Connection(conn_id="masked", conn_type="ahachat", login=BOT, password=token)
    AhaChatHook(ahachat_conn_id="masked").client_from_connection(conn)
    assert token not in str(redact(line))


def test_bulk_defaults_come_from_the_connection(airflow_db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider_ahachat.exceptions import AhaChatValidationError
    from airflow_provider_ahachat.hooks.ahachat import AhaChatHook

    def runner(extra: dict[str, Any], tags: Any = "x", **options: Any) -> Any:
        conn = {"conn_type": "ahachat", "login": BOT, "password": TOKEN, "extra": extra}
        monkeypatch.setenv("AIRFLOW_CONN_BULK", json.dumps(conn))
        return AhaChatHook("bulk").bulk_runner("add_tags", {"tags": tags}, ledger=None, **options)

    default = runner({})
    assert (default.concurrency, default.limiter.limit) == (16, 20.0)
    configured = runner({"rate_limit": "120", "concurrency": 32})
    assert (configured.concurrency, configured.limiter.limit) == (32, 120.0)
    # A keep-alive connection per worker: what urllib3 will keep, not just the attribute.
    assert configured.client.transport._session.get_adapter("https://ahachat.com")._pool_maxsize == 32
    # Without a concurrency, enough workers for the rate at 200 ms a request.
    assert runner({"rate_limit": 200}).concurrency == 40
    assert runner({"rate_limit": 0}).limiter.limit == 0  # no limit
    overridden = runner({"rate_limit": 120, "concurrency": 32}, concurrency=4, rate_limit=10)
    assert (overridden.concurrency, overridden.limiter.limit) == (4, 10.0)
    with pytest.raises(AhaChatValidationError, match="'rate_limit' must be 0 or more"):
        runner({"rate_limit": -1})
    with pytest.raises(AhaChatValidationError, match="'concurrency' must be a whole number"):
        runner({"concurrency": 2.5})
    with pytest.raises(AhaChatValidationError, match="tags"):
        runner({}, tags=[])


def test_a_single_send_never_imports_the_bulk_engine(sandbox: Any) -> None:
    """
    Every single-user operator's ``execute`` goes from the action table to the socket without the
    bulk engine: run each once, for real against the sandbox, in a fresh interpreter.
    """
    code = f"""
import json, os, sys
os.environ["AIRFLOW_CONN_SINGLE"] = {sandbox.connection_uri!r}
from airflow_provider_ahachat.operators import ahachat as ops
user = "3824547807572463"
operators = [
    ops.FindUserOperator(task_id="find", phone="+84 908 071 111", ahachat_conn_id="single"),
    ops.AddTagsOperator(task_id="tag", user_id=user, tags=["vip"], ahachat_conn_id="single"),
    ops.RemoveTagsOperator(task_id="untag", user_id=user, tags="vip", ahachat_conn_id="single"),
    ops.AddAttributesOperator(task_id="attr", user_id=user, attributes={{"a": 1}}, ahachat_conn_id="single"),
    ops.ResetAttributesOperator(task_id="reset", user_id=user, attributes=["a"], ahachat_conn_id="single"),
    ops.SendTextMessageOperator(task_id="text", user_id=user, text="Chào", ahachat_conn_id="single"),
    ops.SendDynamicMessageOperator(
        task_id="message", user_id=user, message=[{{"text": "Chào"}}], ahachat_conn_id="single"
    ),
    ops.BroadcastBlockOperator(
        task_id="broadcast", phone="+84908071111", block_name="shipping_update", ahachat_conn_id="single"
    ),
]
class TI:
    def xcom_push(self, key, value): pass
results = {{op.task_id: type(op.execute({{"ti": TI()}})).__name__ for op in operators}}
print(json.dumps([results, sorted(m for m in sys.modules if m.startswith("airflow_provider_ahachat.bulk"))]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    results, bulk_modules = json.loads(out.stdout.strip().splitlines()[-1])
    assert results == dict.fromkeys(
        ["find", "tag", "untag", "attr", "reset", "text", "message", "broadcast"], "dict"
    )
    assert bulk_modules == []
    assert len(sandbox.outbox()) == 3  # the text, the dynamic message and the broadcast reached Lan
