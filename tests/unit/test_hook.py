"""The hook: connection to client, the connection form Airflow shows, and the provider's registration."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

import pytest

from airflow_provider_ahachat.settings import base_url_from_connection

BOT = "12404829"
TOKEN = "0f3c9a7e5b1d4f2a8c6e0b9d7f5a3c1e2b4d6f8a0c2e4b6d8f0a2c4e6b8d0f2a"
#: The connection form's extra fields a user fills first, in their order.
FIRST_FIELDS = ["base_url", "timeout", "connect_timeout", "max_retries", "rate_limit", "concurrency"]


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
    # The form's Base URL (extra field base_url) wins over whatever host, port and schema say.
    assert base_url_from_connection(host, port, schema, "http://127.0.0.1:9999/") == "http://127.0.0.1:9999"
    assert base_url_from_connection(host, port, schema, "  ") == expected


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
        ("shop_lan_anh", TOKEN, None, "Bot ID (login) must be digits only"),
        (
            BOT,
            TOKEN,
            {"base_url": "ahachat.com"},
            "Base URL (extra field 'base_url') must make an http or https URL",
        ),
        (
            BOT,
            TOKEN,
            {"timeout": "soon"},
            "Read timeout (seconds) (extra field 'timeout') must be a number of seconds above 0, got 'soon'",
        ),
        (
            BOT,
            TOKEN,
            {"connect_timeout": 0},
            "(extra field 'connect_timeout') must be a number of seconds above 0",
        ),
        (
            BOT,
            TOKEN,
            {"max_retries": 2.5},
            "Max retries (extra field 'max_retries') must be a whole number, 0 or more, got 2.5",
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


@pytest.mark.slow
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
    # The one address field is the Base URL, an extra field; a URL carries host, port and scheme.
    assert [name for name in ("host", "port", "url_schema") if standard[name]["hidden"]] == [
        "host",
        "port",
        "url_schema",
    ]
    extra = meta["extra_fields"]
    assert next(iter(extra)) == "base_url"
    assert extra["base_url"]["schema"]["title"] == "Base URL"
    assert set(extra) == {
        *FIRST_FIELDS,
        "rate_limit_redis_conn_id",
        "endpoints",
        "message_tags",
        "default_message_tag",
        "answer_keys",
        *WEBHOOK_FIELDS,
        "approval_secret",
    }
    assert extra["timeout"]["schema"]["title"] == "Read timeout (seconds)"
    assert extra["message_tags"]["schema"]["title"] == "Message tags the page may use"
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
    from airflow import __version__ as airflow_version
    from packaging.version import Version

    if Version(airflow_version) < Version("3.2"):  # 3.2 reads the fields from the provider's info
        pytest.importorskip(
            "flask_appbuilder",
            reason="Airflow 3.1 builds a connection form's fields only with Flask-AppBuilder installed "
            "(apache-airflow-providers-fab)",
        )
    # In a fresh process, as the API server builds the form: Airflow's providers manager is one per
    # process, and what earlier tests made it load must not decide what this test sees.
    check = (
        "from airflow.providers_manager import ProvidersManager\n"
        "widgets = ProvidersManager().connection_form_widgets\n"
        "print(widgets['extra__ahachat__webhook_secret'].is_sensitive,"
        " widgets['extra__ahachat__webhook_replies'].is_sensitive)"
    )
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-2:] == ["True", "False"], done.stdout[-3000:]


def test_hook_methods_describe_the_same_form(airflow_db: Any) -> None:
    from airflow_provider_ahachat.get_provider_info import CONN_FIELDS, UI_FIELD_BEHAVIOUR
    from airflow_provider_ahachat.hooks.ahachat import AhaChatHook

    behaviour = AhaChatHook.get_ui_field_behaviour()
    assert behaviour["relabeling"] == UI_FIELD_BEHAVIOUR["relabeling"]
    assert behaviour["hidden_fields"] == ["host", "port", "schema", "extra"]
    assert list(CONN_FIELDS)[:6] == FIRST_FIELDS
    assert {"rate_limit_redis_conn_id", "endpoints", *WEBHOOK_FIELDS, "approval_secret"} <= set(CONN_FIELDS)


def test_the_form_lists_every_endpoint_of_the_registry() -> None:
    """The endpoints field names every endpoint a connection may correct, from the registry."""
    from airflow_provider_ahachat.get_provider_info import CONN_FIELDS
    from airflow_provider_ahachat.registry import ENDPOINTS

    described = CONN_FIELDS["endpoints"]["description"]
    listed = described.split("Endpoints: ", 1)[1].rstrip(".").split(", ")
    assert listed == list(ENDPOINTS)


def test_airflow_registers_the_sensor_trigger_and_notifier(airflow_db: Any) -> None:
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    assert "airflow_provider_ahachat.notifications.ahachat.AhaChatNotifier" in manager.notification
    triggers = {t.trigger_class_name: t.package_name for t in manager.trigger}
    assert triggers["airflow_provider_ahachat.triggers.ahachat"] == "airflow-provider-ahachat"


@pytest.mark.slow
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
    from airflow_provider_ahachat.bulk.setup import bulk_runner
    from airflow_provider_ahachat.bulk_options import BulkOptions
    from airflow_provider_ahachat.exceptions import AhaChatValidationError
    from airflow_provider_ahachat.hooks.ahachat import AhaChatHook

    def runner(extra: dict[str, Any], tags: Any = "x", **options: Any) -> Any:
        conn = {"conn_type": "ahachat", "login": BOT, "password": TOKEN, "extra": extra}
        monkeypatch.setenv("AIRFLOW_CONN_BULK", json.dumps(conn))
        hook = AhaChatHook("bulk")
        return bulk_runner(hook, "add_tags", {"tags": tags}, BulkOptions(**options), ledger=None)

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
    with pytest.raises(AhaChatValidationError, match=r"\(extra field 'rate_limit'\) must be 0 or more"):
        runner({"rate_limit": -1})
    with pytest.raises(AhaChatValidationError, match=r"\(extra field 'concurrency'\) must be a whole number"):
        runner({"concurrency": 2.5})
    with pytest.raises(AhaChatValidationError, match="tags"):
        runner({}, tags=[])


def test_a_single_send_never_imports_the_bulk_engine(sandbox: Any) -> None:
    """
    Every single-user operator's ``execute`` goes from the registry to the socket without the bulk
    engine: the operator of each action, by user ID and, where AhaChat has it, by phone, run once
    for real against the sandbox, in a fresh interpreter.
    """
    code = f"""
import json, os, sys
os.environ["AIRFLOW_CONN_SINGLE"] = {sandbox.connection_uri!r}
from airflow_provider_ahachat.operators.ahachat import AhaChatBaseOperator
from airflow_provider_ahachat.registry import ACTIONS

def every(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from every(sub)

operators = []
customer = iter(range(1000))  # one generated customer per send: 9 and 15 digits, +849 and 8 digits
for cls in every(AhaChatBaseOperator):
    if cls.__dict__.get("action"):
        action = ACTIONS[cls.action]
        for way in ["id", "phone"] if action.by_phone else ["id"]:
            n = next(customer)
            who = {{"user_id": f"9{{n:015d}}"}} if way == "id" else {{"phone": f"+849{{n:08d}}"}}
            task_id = f"{{cls.action}}_{{way}}"
            operators.append(cls(task_id=task_id, ahachat_conn_id="single", **who, **action.example()))
class TI:
    def xcom_push(self, key, value): pass
results = {{op.task_id: type(op.execute({{"ti": TI()}})).__name__ for op in operators}}
messages = sum(ACTIONS[op.action].sends_message for op in operators)
bulk = sorted(m for m in sys.modules if m.split(".")[:2] == ["airflow_provider_ahachat", "bulk"])
print(json.dumps([results, messages, bulk]))
"""
    sandbox.generate_users(100)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    results, messages, bulk_modules = json.loads(out.stdout.strip().splitlines()[-1])
    from airflow_provider_ahachat.registry import ACTIONS

    assert {name.rsplit("_", 1)[0] for name in results} == {
        name for name, action in ACTIONS.items() if action.addresses_customer
    }
    assert set(results.values()) == {"dict"}
    assert bulk_modules == []
    assert len(sandbox.outbox()) == messages  # every message reached its customer
