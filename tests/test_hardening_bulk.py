"""
The bulk engine against a hostile server and bad files: 429 forever, huge and echoing error bodies,
rows that cannot be encoded, huge cells, one customer written many ways; and the sandbox's warning.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest
from recording_server import Recorded, RecordingServer, Reply

from airflow_provider_ahachat.bulk import AhaChatBulkError, BulkRunner, Ledger
from airflow_provider_ahachat.bulk.recipients import read_recipients
from airflow_provider_ahachat.client import AhaChatClient, RetryPolicy
from airflow_provider_ahachat.models import normalize_phone
from airflow_provider_ahachat.redaction import MAX_KEPT, MIN_FRAGMENT
from airflow_provider_ahachat.sandbox.__main__ import exposure_warning

TOKEN = "bulk9Hq2Wx7Kp4Zt1Lm6Nv3Rb8Cd5Fg0Jy"
BOT = "12404829"
FAST = RetryPolicy(max_retries=2, backoff_base=0.01, backoff_max=0.05, max_retry_time=20)


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    srv = RecordingServer().start()
    yield srv
    srv.stop()


def leaks(text: str) -> bool:
    return any(TOKEN[i : i + MIN_FRAGMENT] in text for i in range(len(TOKEN) - MIN_FRAGMENT + 1))


def run(
    server: RecordingServer,
    rows: Any,
    ledger: Path | None = None,
    action: str = "send_text",
    arguments: dict[str, Any] | None = None,
    retry: RetryPolicy = FAST,
    **options: Any,
) -> tuple[dict[str, Any], AhaChatBulkError | None]:
    options.setdefault("max_failure_ratio", 1)
    with AhaChatClient(BOT, TOKEN, server.url, retry=retry, read_timeout=10) as client:
        runner = BulkRunner(
            client,
            client.bind(action, arguments if arguments is not None else {"text": "xin chào"}),
            ledger=Ledger(ledger) if ledger is not None else None,
            concurrency=options.pop("concurrency", 2),
            progress_interval=60,
            **options,
        )
        try:
            return runner.run(rows), None
        except AhaChatBulkError as err:
            return err.summary, err


def per_recipient(server: RecordingServer) -> Counter[str]:
    return Counter(r.path for r in server.requests if r.method == "POST")


# --------------------------------------------------------------------------- 6. 429 forever


def _http_date(offset: float) -> str:
    return formatdate(time.time() + offset, usegmt=True)


@pytest.mark.parametrize("retry_after", [None, "0", "garbage", "-5", "past date", "soon date"])
def test_429_forever_tries_each_recipient_max_retries_plus_one_times(
    airflow_db: Any, server: RecordingServer, monkeypatch: pytest.MonkeyPatch, retry_after: str | None
) -> None:
    from airflow_provider_ahachat.bulk.setup import bulk_runner
    from airflow_provider_ahachat.bulk_options import BulkOptions
    from airflow_provider_ahachat.hooks.ahachat import AhaChatHook

    value = {"past date": _http_date(-3600), "soon date": _http_date(0.5)}.get(str(retry_after), retry_after)
    server.default = Reply(
        status=429, body={"message": "slow down"}, headers={"Retry-After": value} if value else {}
    )
    host, port = server.url.removeprefix("http://").split(":")
    conn = {
        "conn_type": "ahachat",
        "login": BOT,
        "password": TOKEN,
        "host": host,
        "port": int(port),
        "schema": "http",
        "extra": {"max_retries": 2},
    }
    monkeypatch.setenv("AIRFLOW_CONN_STORM", json.dumps(conn))
    hook = AhaChatHook("storm")
    options = BulkOptions(concurrency=2, rate_limit=0, progress_interval=60)
    runner = bulk_runner(hook, "send_text", {"text": "hi"}, options, ledger=None)
    rows = ["1001", "1002", "1003"]
    with pytest.raises(AhaChatBulkError) as caught:
        runner.run(rows)
    summary = caught.value.summary
    counts = per_recipient(server)
    assert sorted(counts.values()) == [3, 3, 3] and all(any(uid in p for p in counts) for uid in rows)
    assert summary["outcomes"] == {"failed": 3}
    for failure in summary["first_failures"]:
        assert "429" in failure["reason"] and "after 3 attempts" in failure["reason"]


@pytest.mark.parametrize("retry_after", ["86400", "1e12", "inf", "far date"])
def test_a_retry_after_longer_than_any_retry_may_wait_stops_the_run_at_once(
    server: RecordingServer, retry_after: str
) -> None:
    value = _http_date(30 * 86400) if retry_after == "far date" else retry_after
    server.default = Reply(status=429, headers={"Retry-After": value}, body=b"")
    began = time.monotonic()
    summary, err = run(server, [str(1000 + i) for i in range(20)])
    assert time.monotonic() - began < 15  # no hour-long pause, no hammering
    assert err is not None and "Retry-After" in str(err) and "max_retry_time" in str(err)
    counts = per_recipient(server)
    assert counts and max(counts.values()) <= 3 and len(counts) <= 2  # only what was in flight
    assert summary["outcomes"].get("failed", 0) >= 1
    assert summary["outcomes"].get("not_sent", 0) >= 18


# --------------------------------------------------------------------------- 2, 3, 5. echoes and huge bodies


@pytest.mark.parametrize(
    "body",
    [
        ("x" * 190 + TOKEN).encode(),
        ("x" * (MAX_KEPT - 10) + TOKEN).encode(),
        ("x" * 20_000_000 + TOKEN).encode(),
        json.dumps({"message": TOKEN[:12] + "e" * 20_000_000}).encode(),
        json.dumps({"message": "e" * 3000 + TOKEN[-9:]}).encode(),
    ],
    ids=["page-190", "page-cut", "page-20MB", "message-20MB", "message-suffix"],
)
def test_reports_journals_and_summaries_keep_no_token_and_a_few_kb(
    server: RecordingServer, tmp_path: Path, body: bytes
) -> None:
    server.default = Reply(status=400, body=body, headers={"Content-Type": "text/html"})
    summary, err = run(server, ["1001", "1002"], ledger=tmp_path, max_failure_ratio=None)
    assert err is not None and summary["outcomes"] == {"failed": 2}
    written = {p.name: p.read_text(encoding="utf-8") for p in tmp_path.iterdir() if p.is_file()}
    kept = [json.dumps(summary), str(err), *written.values()]
    assert not [k for k in kept if leaks(k)]
    assert len(json.dumps(summary)) < 20 * MAX_KEPT
    for name, text in written.items():
        for line in text.splitlines():
            assert len(line) < 6 * MAX_KEPT, name


def test_a_2xx_echoing_the_token_reaches_no_summary(server: RecordingServer, tmp_path: Path) -> None:
    server.default = Reply(body={"success": True, "data": {"echo": TOKEN}})
    summary, err = run(server, ["1001"], ledger=tmp_path, dry_run=False)
    assert err is None and not leaks(json.dumps(summary))


# --------------------------------------------------------------------------- 7, 8. bad rows, huge cells


def _lines(*rows: str) -> bytes:
    return "".join(r + "\n" for r in rows).encode()


BAD_JSONL: dict[str, tuple[bytes, set[int]]] = {
    "lone surrogate in an attribute": (
        _lines('{"user_id": "1001"}', '{"user_id": "1002", "name": "\\ud800"}', '{"user_id": "1003"}'),
        {2},
    ),
    "lone surrogate in the user ID": (_lines('{"user_id": "10\\udfff"}', '{"user_id": "1003"}'), {1}),
    "lone surrogate in a key": (_lines('{"user_id": "1001", "\\ud83d": "x"}', '{"user_id": "1003"}'), {1}),
    "lone surrogate nested": (
        _lines('{"user_id": "1001", "attributes": {"a": ["\\udc00"]}}', '{"user_id": "1003"}'),
        {1},
    ),
    "lone surrogate in a phone": (_lines('{"phone": "0908\\ud800"}', '{"user_id": "1003"}'), {1}),
    "lone surrogate as the row": (_lines('"\\ud800"', '"1003"'), {1}),
    "bytes that are not UTF-8": (b'{"user_id": "1001", "name": "\xff\xfe"}\n{"user_id": "1003"}\n', {1}),
    "a huge line": (
        _lines('{"user_id": "1001", "n": "' + "x" * 2_000_000 + '"}', '{"user_id": "1003"}'),
        {1},
    ),
}

BAD_CSV: dict[str, tuple[bytes, set[int]]] = {
    "10 MB cell": (b"user_id,name\n1001,a\n1002," + b"x" * 10_000_000 + b"\n1003,c\n", {2}),
    "10 MB quoted cell with new lines": (b'user_id,name\n1001,"' + b"x\n" * 5_000_000 + b'"\n1003,c\n', {1}),
    "huge user ID": (b"user_id,name\n" + b"1" * 200_000 + b",a\n1003,c\n", {1}),
    "bytes that are not UTF-8": (b"user_id,name\n1001,caf\xe9\n1003,c\n", {1}),
    "lone surrogate as escaped bytes": (b"user_id,name\n1001,\xed\xa0\x80\n1003,c\n", {1}),
}


@pytest.mark.parametrize(("kind", "case"), [("jsonl", c) for c in BAD_JSONL] + [("csv", c) for c in BAD_CSV])
def test_a_bad_row_is_invalid_with_its_number_and_the_others_are_sent(
    server: RecordingServer, tmp_path: Path, kind: str, case: str
) -> None:
    data, bad = (BAD_JSONL if kind == "jsonl" else BAD_CSV)[case]
    source = tmp_path / f"audience.{kind}"
    source.write_bytes(data)
    ledger = tmp_path / "ledger"
    summary, _ = run(server, read_recipients(source), ledger=ledger)

    total = len(list(read_recipients(source)))
    assert summary["outcomes"].get("invalid") == len(bad)
    assert summary["outcomes"].get("delivered") == total - len(bad)  # every other row was sent
    reasons = {f["row"]: f["reason"] for f in summary["first_failures"]}
    assert set(reasons) == bad and all(f"row {n}" in reasons[n] or "line" in reasons[n] for n in bad)
    journal = "".join(p.read_text(encoding="utf-8") for p in ledger.glob("journal-*.jsonl"))
    claimed = [key for line in journal.splitlines() for key in json.loads(line).get("c", [])]
    assert len(claimed) == total - len(bad)  # nothing claimed for a bad row: a retry sees it invalid again
    report = (ledger / "report.jsonl").read_text(encoding="utf-8")
    assert all(len(line) < 6 * MAX_KEPT for line in report.splitlines())
    again, _ = run(server, read_recipients(source), ledger=ledger)  # a retry of the task
    assert again["outcomes"].get("invalid") == len(bad) and "unknown" not in again["outcomes"]


# --------------------------------------------------------------------------- 9. phones


SAME_NUMBER = [
    "+84908071111",
    "0908 071 111",
    "84908071111",
    "0908.071.111",
    "+84 908-071-111",
    "0084908071111",
    "908071111",
]


@pytest.mark.parametrize("form", SAME_NUMBER)
def test_every_form_of_a_vietnamese_number_is_one_e164_number(form: str) -> None:
    assert normalize_phone(form) == "+84908071111"


@pytest.mark.parametrize(
    ("country", "form", "expected"),
    [
        ("1", "0212 555 0100", "+12125550100"),
        ("33", "06 12 34 56 78", "+33612345678"),
        ("44", "+84908071111", "+84908071111"),
        ("65", "6591234567", "+6591234567"),
    ],
)
def test_the_default_country_changes_numbers_without_one(country: str, form: str, expected: str) -> None:
    assert normalize_phone(form, country_code=country) == expected


def test_one_customer_written_many_ways_is_messaged_once_and_keyed_once(
    server: RecordingServer, tmp_path: Path
) -> None:
    rows = [{"phone": form} for form in SAME_NUMBER]
    arguments = {"block_name": "welcome", "message_tag": "HUMAN_AGENT"}
    summary, _ = run(server, rows, ledger=tmp_path, action="broadcast_block", arguments=arguments)
    assert summary["outcomes"] == {"delivered": 1, "duplicate": len(SAME_NUMBER) - 1}
    (sent,) = server.requests
    assert ("phone", "+84908071111") in sent.query and "phone=%2B84908071111" in sent.raw_path
    again, _ = run(
        server, [{"phone": "0908071111"}], ledger=tmp_path, action="broadcast_block", arguments=arguments
    )
    assert again["outcomes"] == {"delivered": 1} and len(server.requests) == 1  # the ledger knew it


def test_the_connection_sets_the_default_country(airflow_db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider_ahachat.exceptions import AhaChatValidationError
    from airflow_provider_ahachat.hooks.ahachat import AhaChatHook

    for extra, expected in [({}, "+84908071111"), ({"default_country_code": "+1"}, "+1908071111")]:
        monkeypatch.setenv(
            "AIRFLOW_CONN_CC",
            json.dumps({"conn_type": "ahachat", "login": BOT, "password": TOKEN, "extra": extra}),
        )
        client = AhaChatHook("cc").client
        assert client.prepare("find_user", phone="0908071111").recipient.phone == expected  # type: ignore[union-attr]
    monkeypatch.setenv(
        "AIRFLOW_CONN_CC",
        json.dumps(
            {
                "conn_type": "ahachat",
                "login": BOT,
                "password": TOKEN,
                "extra": {"default_country_code": "084"},
            }
        ),
    )
    with pytest.raises(AhaChatValidationError, match="default_country_code"):
        _ = AhaChatHook("cc").client


def _directory(recorded: Recorded) -> Reply:
    if recorded.method == "GET" and recorded.path.endswith("/users"):
        phone = dict(recorded.query).get("phone")
        if phone == "+84908071111":
            return Reply(body={"success": True, "data": {"messenger_user_id": "3824547807572463"}})
        return Reply(status=404, body={"success": False, "message": "no user"})
    return Reply()


@pytest.mark.parametrize("resolve", [True, False])
def test_resolve_phones_tells_a_user_id_and_their_phone_apart_with_one_lookup(
    server: RecordingServer, resolve: bool
) -> None:
    server.responder = _directory
    rows = [
        {"user_id": "3824547807572463"},
        {"phone": "0908 071 111"},
        {"phone": "+84 908 071 111"},
        {"phone": "0999999999"},
    ]
    summary, _ = run(
        server, rows, action="add_tags", arguments={"tags": ["vip"]}, resolve_phones=resolve, concurrency=1
    )
    lookups = [r for r in server.requests if r.method == "GET"]
    tagged = [r for r in server.requests if r.method == "POST"]
    if resolve:
        assert summary["outcomes"] == {"delivered": 1, "duplicate": 2, "failed": 1}
        assert len(lookups) == 3 and len(tagged) == 1  # one lookup per phone row, and no second send
    else:
        assert summary["outcomes"].get("delivered") == 2 and summary["outcomes"].get("duplicate") == 1
        assert len(tagged) == 2  # the same customer twice: by ID and by phone


# --------------------------------------------------------------------------- 11. the sandbox


@pytest.mark.parametrize(
    "address", ["0.0.0.0", "::", "192.168.1.20", "10.0.0.7", "203.0.113.9", "fe80::1%eth0", "not-an-ip"]
)
def test_the_sandbox_warns_on_any_address_but_loopback(address: str) -> None:
    warning = exposure_warning(address)
    assert warning is not None and "WARNING" in warning and "no authentication" in warning.lower()


@pytest.mark.parametrize("address", ["127.0.0.1", "127.8.9.10", "::1"])
def test_the_sandbox_is_quiet_on_loopback(address: str) -> None:
    assert exposure_warning(address) is None


def test_the_sandbox_on_every_interface_says_so_loudly() -> None:
    command = [sys.executable, "-m", "airflow_provider_ahachat.sandbox", "--host", "0.0.0.0", "--port", "0"]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        assert process.stdout is not None
        ready = process.stdout.readline().decode()
        assert "listening" in ready
    finally:
        process.terminate()
        try:
            _, err = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            _, err = process.communicate()
    assert "WARNING" in err.decode() and "0.0.0.0" in err.decode()


# ------------------------------------------------------------------ inside Airflow: XCom and the task log


def test_nothing_airflow_keeps_holds_the_token_whatever_the_server_echoes(
    dag_runner: Any, server: RecordingServer, tmp_path: Path
) -> None:
    from airflow.sdk import DAG

    from airflow_provider_ahachat.operators.ahachat import AddTagsOperator, SendTextMessageOperator

    def answer(recorded: Recorded) -> Reply:
        if "/messages" in recorded.path:  # a 2xx that echoes the token, in its data
            return Reply(body={"success": True, "data": {"echo": TOKEN, TOKEN: [TOKEN[:20]]}})
        return Reply(status=500, body=("x" * 199 + TOKEN + "y" * 3_000_000).encode())  # huge, echoing

    server.responder = answer
    host, port = server.url.removeprefix("http://").split(":")
    uri = f"ahachat://{BOT}:{TOKEN}@{host}:{port}/http?max_retries=0"
    with DAG("hostile_echo", schedule=None, default_args={"retries": 0}) as dag:
        SendTextMessageOperator(task_id="text", ahachat_conn_id="hostile", user_id="1001", text="hi")
        AddTagsOperator(
            task_id="tags",
            ahachat_conn_id="hostile",
            tags=["vip"],
            recipients=["1001", "1002"],
            ledger_path=str(tmp_path),
            max_failure_ratio=1,
        )
    result = dag_runner(dag, {"hostile": uri})
    assert result.task_states == {"text": "success", "tags": "success"}, result.summary()
    assert "***" in json.dumps(result.xcoms["text"])
    assert not leaks(json.dumps(result.xcoms)), result.xcoms
    assert not leaks(result.log)
    assert len(json.dumps(result.xcoms["tags"])) < 20 * MAX_KEPT
    for written in tmp_path.rglob("*.jsonl"):
        text = written.read_text(encoding="utf-8")
        assert not leaks(text) and all(len(line) < 6 * MAX_KEPT for line in text.splitlines())
