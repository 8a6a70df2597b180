"""
The attack on the plugin's public routes, run again with other values of each kind, against real
Airflow processes: ``airflow standalone`` on a free port with its own home, the provider's plugin
on its API server, the DAGs of ``tests/hitl_dags/ahachat_attack_cases.py``, the sandbox as AhaChat,
and two connections: ``shop_a`` (a webhook secret and an approval secret) and ``shop_b`` (one
secret for both). One test per class of break, each with a positive control:

1. a token crosses no connection, DAG, run, task, map index or try;
2. non-finite numbers are refused, and one bad stored value blocks no other call;
3. every route refuses a body over its limit while it arrives;
4. every value a caller sent is escaped before it is logged;
5. no secret comes back, in an answer, an event or a log line, wherever a caller puts it;
6. nesting deeper than the limit is a 400, not a 500;
7. the task's own state and deadline decide whether a tap may still answer.

The scheduler's sweep of Human-in-the-loop deadlines is held (``AHACHAT_TEST_SWEEP_GATE``) until
the deadline test lets it run, so that a task can be seen waiting past its deadline.
"""

from __future__ import annotations

import dataclasses
import json
import select
import shutil
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psutil
import pytest
import requests
from airflow_processes import AirflowProcesses, wait_until
from approval_helpers import (
    WAIT,
    buttons,
    call,
    question_of,
    questions,
    token_of,
    trigger,
    wait_for_park,
    with_token,
)

from airflow_provider_ahachat.events import event_uri
from airflow_provider_ahachat.inbound.answer import OUTCOME_HEADER
from airflow_provider_ahachat.inbound.intake import MAX_DEPTH
from airflow_provider_ahachat.inbound.tokens import AnswerToken, sign
from airflow_provider_ahachat.sandbox import SandboxServer

pytestmark = [pytest.mark.airflow_processes, pytest.mark.timeout(3600)]

ROOT = Path(__file__).resolve().parent.parent
CONN_A, CONN_B = "shop_a", "shop_b"
# As `secrets.token_urlsafe(32)` makes them: 43 characters a URL and an event name may hold.
WEBHOOK_A = "Qk7vX2pL9mN4rT8wY1zB6cD3fG5hJ0kM2nP4qR6sT8u"
APPROVAL_A = "aP3xV9bN2mQ7wE4rT6yU1iO8pL5kJ0hG3fD9sA2zX4c"
SECRET_B = "Zr8TqW2eY5uI9oP1aS4dF7gH0jK3lZ6xC9vB2nM5qW8"
OWNER, LAN = "6620193847561029", "3824547807572463"
APPROVE = "Đồng ý"
BIG = 12 * 1024 * 1024


@dataclass
class Attack:
    airflow: AirflowProcesses
    sandbox: SandboxServer
    gate: Path
    runs: dict[str, str]  # name -> run ID

    @property
    def secrets(self) -> dict[str, str]:
        """Every secret of the two connections (the Bot Token both use too)."""
        return {
            "A's webhook": WEBHOOK_A,
            "A's approval": APPROVAL_A,
            "B's": SECRET_B,
            "token": self.sandbox.token,
        }


@pytest.fixture(scope="module")
def attack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Attack]:
    tmp = tmp_path_factory.mktemp("attack")
    dags = tmp / "dags"
    dags.mkdir()
    shutil.copy(ROOT / "tests" / "hitl_dags" / "ahachat_attack_cases.py", dags)
    home = tmp / "home"
    (home / "config").mkdir(parents=True)
    shutil.copy(ROOT / "tests" / "scheduler_hold.py", home / "config" / "airflow_local_settings.py")
    gate = tmp / "sweep_held"
    gate.touch()
    with SandboxServer() as sandbox:
        uri = sandbox.connection_uri
        joint = "&" if "?" in uri else "?"
        env = {
            "AIRFLOW_CONN_SHOP_A": f"{uri}{joint}webhook_secret={WEBHOOK_A}&approval_secret={APPROVAL_A}",
            "AIRFLOW_CONN_SHOP_B": f"{uri}{joint}webhook_secret={SECRET_B}",
            "SHOP_OWNER_ID": OWNER,
            "AIRFLOW__SCHEDULER__TRIGGER_TIMEOUT_CHECK_INTERVAL": "2",
            "AHACHAT_TEST_SWEEP_GATE": str(gate),
        }
        with AirflowProcesses(home, dags_folder=dags, env=env, start_timeout=1500) as airflow:
            for dag_id in ("attack_ask_a", "attack_ask_b", "attack_deadline"):
                airflow.wait_for_dag(dag_id)
            for event, dag_id in (("attack", "attack_events"), ("keys", "attack_keys")):
                airflow.wait_for_asset_consumer(event_uri(event, CONN_A), dag_id)
            runs = {
                "a1": trigger(airflow, "attack_ask_a"),
                "a2": trigger(airflow, "attack_ask_a"),
                "b": trigger(airflow, "attack_ask_b"),
                "deadline": trigger(airflow, "attack_deadline"),
            }
            found = Attack(airflow, sandbox, gate, runs)
            yield found
            logs = "".join(p.read_text(errors="replace") for p in (airflow.home / "logs").rglob("*.log"))
            assert fragments(logs, [WEBHOOK_A, APPROVAL_A, SECRET_B]) == []


# -- helpers


def fragments(text: str, secrets: list[str], size: int = 8) -> list[str]:
    """Every piece of ``size`` characters of any of ``secrets`` (or of its URL-encoded form) in ``text``."""
    found = []
    for secret in secrets:
        for form in {secret, quote(secret, safe="")}:
            found += [form[i : i + size] for i in range(len(form) - size + 1) if form[i : i + size] in text]
    return found


def button(attack: Attack, marker: str, run: str, title: str = APPROVE) -> str:
    """The URL of the button ``title`` of the question about ``marker`` that run ``run`` asked."""
    run_id = attack.runs[run]

    def found() -> str | None:
        for entry in questions(attack.sandbox, OWNER, marker):
            url = buttons(entry).get(title)
            if url and token_of(url).run_id == run_id:
                return url
        return None

    try:
        return str(wait_until(found, WAIT, f"the question {marker!r} of run {run}", 1.0))
    except TimeoutError:
        print(attack.airflow.log_tail(20000))
        raise


def hitl(attack: Attack, token: AnswerToken) -> dict[str, Any]:
    detail = attack.airflow.get_json(
        f"/api/v2/dags/{token.dag_id}/dagRuns/{token.run_id}/taskInstances/{token.task_id}"
        f"/{token.map_index}/hitlDetails"
    )
    assert detail is not None
    return dict(detail)


def ti_state(attack: Attack, token: AnswerToken) -> str:
    path = f"/api/v2/dags/{token.dag_id}/dagRuns/{token.run_id}/taskInstances/{token.task_id}"
    ti = attack.airflow.get_json(path if token.map_index < 0 else f"{path}/{token.map_index}")
    return str(ti["state"])


def tap_for_real(attack: Attack, url: str) -> str:
    """The owner taps a real button once the task is parked for good: the outcome."""
    wait_for_park(attack.airflow, token_of(url))
    return call(url, OWNER)[0]


def webhook(
    conn_id: str, event: str, secret: str | None, **kwargs: Any
) -> Callable[[str], requests.Response]:
    """A call of the webhook, as a function of the API server's URL."""
    headers = dict(kwargs.pop("headers", {}))
    if secret is not None:
        headers["X-AhaChat-Secret"] = secret

    def send(url: str) -> requests.Response:
        return requests.post(
            f"{url}/ahachat/webhooks/{conn_id}/{event}", headers=headers, timeout=120, **kwargs
        )

    return send


def recorded(attack: Attack, event: str) -> list[dict[str, Any]]:
    """
    The extras of the events of ``event`` on ``shop_a``, oldest first, as stored (read from the
    metadata database: Airflow 3.3.2's ``GET /api/v2/assets/events`` answers 500 while a run an
    event created waits to start).
    """
    with sqlite3.connect(f"file:{attack.airflow.home / 'airflow.db'}?mode=ro", uri=True, timeout=60) as db:
        rows = db.execute(
            "SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id"
            " WHERE a.uri = ? ORDER BY e.id",
            (event_uri(event, CONN_A),),
        ).fetchall()
    return [json.loads(extra) for (extra,) in rows]


def settled_runs(attack: Attack, dag_id: str) -> list[dict[str, Any]]:
    """The DAG's runs once there are some, all are over, and no event waits for another one."""
    runs = attack.airflow.dag_runs(dag_id)
    queued = (attack.airflow.get_json(f"/api/v2/dags/{dag_id}/assets/queuedEvents") or {}).get(
        "queued_events"
    )
    over = runs and all(r["state"] in ("success", "failed") for r in runs)
    return runs if over and not queued else []


def log_lines(attack: Attack) -> list[str]:
    """
    The API server's log as a reader sees it (split at every line boundary Python knows), once
    what it logged so far has reached the file: a last call is logged, and waited for.
    """
    mark = f"flush-{uuid.uuid4().hex}"
    assert webhook(CONN_A, mark, WEBHOOK_A, json=GOOD)(attack.airflow.url).status_code == 404
    wait_until(lambda: mark in attack.airflow.log_tail(200_000), 120, "the API server's log", 0.2)
    return attack.airflow.log_tail(10**9).splitlines()


GOOD = {"messenger_user_id": LAN, "order_code": "DH10231"}


# -- 1. a token crosses no connection, DAG, run, task, map index or try


def test_a_token_never_crosses_connections_dags_runs_tasks_map_indexes_or_tries(attack: Attack) -> None:
    a = button(attack, "Duyệt qua shop A?", "a1")
    a2 = button(attack, "Duyệt qua shop A?", "a2")
    m0, m1 = (button(attack, f"Duyệt phần {n}?", "a1") for n in (0, 1))
    b = button(attack, "Duyệt qua shop B?", "b")
    a_tok, a2_tok, m0_tok, b_tok = (token_of(u) for u in (a, a2, m0, b))
    a_nonce, m0_nonce, b_nonce = (question_of(attack.airflow, t).nonce for t in (a_tok, m0_tok, b_tok))
    assert (a_tok.conn_id, b_tok.conn_id, m0_tok.map_index) == (CONN_A, CONN_B, 0)
    b_payload, b_signature = b.split("?t=", 1)[1].split("&", 1)[0].split(".")
    moved_claim = dataclasses.replace(b_tok, conn_id=CONN_A, dag_id=a_tok.dag_id, run_id=a_tok.run_id)
    moved_payload = sign(moved_claim, "any secret", "any nonce").split(".")[0]

    def moved(token: AnswerToken, secret: str, nonce: str) -> str:
        return with_token(a, sign(token, secret, nonce))

    forgeries = {
        # The break that was found: B's secret approving a task that asked through A.
        "B's secret, naming B, for A's task": moved(
            dataclasses.replace(a_tok, conn_id=CONN_B), SECRET_B, b_nonce
        ),
        "B's secret, naming B, with A's nonce": moved(
            dataclasses.replace(a_tok, conn_id=CONN_B), SECRET_B, a_nonce
        ),
        "B's secret, naming A": moved(a_tok, SECRET_B, a_nonce),
        "A's webhook secret (A has an approval secret)": moved(a_tok, WEBHOOK_A, a_nonce),
        "B's real token, moved to A's task": with_token(a, f"{moved_payload}.{b_signature}"),
        "A's key, for B's DAG": moved(dataclasses.replace(b_tok, conn_id=CONN_A), APPROVAL_A, a_nonce),
        "B's key and nonce, for B's DAG, naming A": moved(
            dataclasses.replace(b_tok, conn_id=CONN_A), SECRET_B, b_nonce
        ),
        "run 1's nonce, for run 2": moved(
            dataclasses.replace(a_tok, run_id=a2_tok.run_id), APPROVAL_A, a_nonce
        ),
        "map index 0's nonce, for map index 1": moved(
            dataclasses.replace(m0_tok, map_index=1), APPROVAL_A, m0_nonce
        ),
        "task ask's nonce, for task ask_mapped": moved(
            dataclasses.replace(a_tok, task_id="ask_mapped", map_index=0), APPROVAL_A, a_nonce
        ),
        "a later try": moved(dataclasses.replace(a_tok, try_number=2), APPROVAL_A, a_nonce),
    }
    outcomes = {case: call(url, OWNER)[0] for case, url in forgeries.items()}
    assert outcomes == dict.fromkeys(forgeries, "forged")
    assert (
        call(moved(dataclasses.replace(a_tok, try_number=0), APPROVAL_A, a_nonce), OWNER)[0] == "earlier_try"
    )
    assert b_payload  # B's own payload was real; only its signature was reused
    for token in (a_tok, a2_tok, m0_tok, token_of(m1), b_tok):
        assert hitl(attack, token)["response_received"] is False
    refused = [line for line in log_lines(attack) if "AhaChat HITL answer refused (forged)" in line]
    assert len(refused) >= len(forgeries)

    # Positive control: the real buttons, through A (a task and a mapped one) and through B.
    for url, token in ((a, a_tok), (m1, token_of(m1)), (b, b_tok)):
        assert tap_for_real(attack, url) == "recorded"
        detail = hitl(attack, token)
        assert (detail["chosen_options"], detail["responded_by_user"]["id"]) == (
            ["Approve"],
            f"ahachat:{OWNER}",
        )
    assert hitl(attack, m0_tok)["response_received"] is False
    recorded_lines = [
        line
        for line in log_lines(attack)
        if "AhaChat HITL answer recorded" in line and f"run_id={a_tok.run_id}" in line
    ]
    assert len(recorded_lines) == 2  # a and m1; none of the forgeries


# -- 2. non-finite numbers; one bad stored value


NON_FINITE = {
    "NaN": '{"messenger_user_id": "%s", "x": NaN}',
    "Infinity": '{"messenger_user_id": "%s", "x": Infinity}',
    "-Infinity nested in lists": '{"messenger_user_id": "%s", "l": [1, [2.5, [-Infinity]]]}',
    "1e999 in an object in a list": '{"messenger_user_id": "%s", "o": {"deep": [{"v": 1e999}]}}',
    "-1E+400": '{"messenger_user_id": "%s", "n": -1E+400}',
    "overflow as the user ID": '{"messenger_user_id": 3e308000, "n": "%s"}',
    "NaN as the idempotency key": '{"messenger_user_id": "%s", "idempotency_key": NaN}',
    "NaN in a list body": '[NaN, "%s"]',
    # Valid JSON that no reader of the event takes either: Airflow hands events to tasks as msgpack.
    "an integer of 2**64": '{"messenger_user_id": "%s", "n": [18446744073709551616]}',
    "an integer below -2**63": '{"messenger_user_id": "%s", "n": {"m": -9223372036854775809}}',
}


def test_non_finite_numbers_are_refused_and_a_bad_stored_value_blocks_nothing(attack: Attack) -> None:
    url = attack.airflow.url
    before = len(recorded(attack, "attack"))
    for case, template in NON_FINITE.items():
        for content_type in ("application/json", "application/vnd.api+json"):
            answer = webhook(
                CONN_A,
                "attack",
                WEBHOOK_A,
                data=(template % LAN).encode(),
                headers={"Content-Type": content_type},
            )(url)
            assert answer.status_code == 400, (case, answer.text)
            assert any(w in answer.json()["error"] for w in ("finite", "JSON", "64 bits")), (
                case,
                answer.text,
            )
    for body in ('{"messenger_user_id": NaN}', '{"x": [-Infinity]}', '{"x": 1e400}'):
        answer = requests.post(
            f"{url}/ahachat/approvals/answer?t=x",
            data=body,
            headers={"Content-Type": "application/json"},
            timeout=120,
        )
        assert answer.status_code == 400, answer.text
    assert len(recorded(attack, "attack")) == before

    # Positive control: finite numbers of every size are recorded, and the runs read them.
    numbers = [1.5, -0.0, 1e308, -2.2250738585072014e-308, 2**63 - 1, -(2**63)]
    finite = {"messenger_user_id": LAN, "n": numbers}
    for _ in range(3):
        assert webhook(CONN_A, "attack", WEBHOOK_A, json=finite)(url).status_code == 200
    events = recorded(attack, "attack")
    assert len(events) == before + 3
    assert events[-1]["fields"]["n"] == numbers
    runs = wait_until(lambda: settled_runs(attack, "attack_events"), WAIT, "the runs of attack_events", 1.0)
    assert {r["state"] for r in runs} == {"success"}, attack.airflow.log_tail(20000)

    # Another writer (Airflow's own public route takes NaN) stores a bad value on an asset; calls
    # with idempotency keys on that asset go on being recorded once each.
    asset = attack.airflow.asset(event_uri("keys", CONN_A))
    assert asset is not None
    bad = requests.post(
        f"{url}/api/v2/assets/events",
        data=f'{{"asset_id": {asset["id"]}, "extra": {{"idempotency_key": "k-bad", "x": NaN}}}}',
        headers={"Content-Type": "application/json"},
        timeout=120,
    )
    assert bad.status_code == 200, bad.text
    keyed = [
        webhook(CONN_A, "keys", WEBHOOK_A, json=GOOD, headers={"Idempotency-Key": k})(url)
        for k in ("k-1", "k-1", "k-2", "k-bad")
    ]
    assert [a.status_code for a in keyed] == [200, 200, 200, 200], [a.text for a in keyed]
    keys = [e.get("idempotency_key") for e in recorded(attack, "keys")]
    assert keys.count("k-1") == 1 and keys.count("k-2") == 1 and keys.count("k-bad") == 1


# -- 3. body limits, while the body arrives


@dataclass
class Sent:
    status: int
    sent: int  # bytes of the body sent before the answer came
    seconds: float


def send_slowly(
    port: int, method: str, path: str, headers: dict[str, str], body: bytes, chunked: bool
) -> Sent:
    """
    Send ``body`` 64 KiB at a time, 20 ms apart (12 MB takes about 4 s), and stop as soon as an
    answer comes: how much had been sent then, and the answer's status.
    """
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    head += "Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {len(body)}\r\n"
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        sock.sendall((head + "\r\n").encode())
        sent = 0
        while sent < len(body):
            if select.select([sock], [], [], 0.02)[0]:
                break
            piece = body[sent : sent + 65536]
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            except OSError:  # the server closed the connection: its answer is waiting
                break
            sent += len(piece)
        else:
            if chunked:
                sock.sendall(b"0\r\n\r\n")
        answer = b""
        while b"\r\n" not in answer:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    return Sent(int(answer.split(b" ", 2)[1]), sent, time.monotonic() - started)


class Memory:
    """The API server's resident memory, sampled every 50 ms while in use: its peak."""

    def __init__(self, port: int) -> None:
        listening = [
            c.pid
            for c in psutil.net_connections("tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port
        ]
        assert listening and listening[0] is not None
        self.process = psutil.Process(listening[0])
        self.base = self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> Memory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _big_bodies() -> dict[str, tuple[dict[str, str], bytes]]:
    pad = b"x" * BIG
    boundary = "attackboundary"
    multipart = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="messenger_user_id"\r\n\r\n{LAN}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="pad"\r\n\r\n'
        ).encode()
        + pad
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return {
        "JSON": (
            {"Content-Type": "application/json"},
            b'{"messenger_user_id": "%s", "pad": "' % LAN.encode() + pad + b'"}',
        ),
        "form": (
            {"Content-Type": "application/x-www-form-urlencoded"},
            f"messenger_user_id={LAN}&pad=".encode() + pad,
        ),
        "multipart form": ({"Content-Type": f"multipart/form-data; boundary={boundary}"}, multipart),
    }


def test_every_route_refuses_a_body_over_its_limit_while_it_arrives(attack: Attack) -> None:
    port = attack.airflow.port
    routes = {
        "webhook, with the secret": (
            "POST",
            f"/ahachat/webhooks/{CONN_A}/attack",
            {"X-AhaChat-Secret": WEBHOOK_A},
        ),
        "webhook, without": ("POST", f"/ahachat/webhooks/{CONN_A}/attack", {}),
        "tap, POST": ("POST", "/ahachat/approvals/answer?t=x&messenger_user_id=1", {}),
        "tap, GET with a body": ("GET", "/ahachat/approvals/answer?t=x&messenger_user_id=1", {}),
        "no such route of the plugin": ("POST", "/ahachat/nothing/here", {}),
    }
    results: dict[str, Sent] = {}
    with Memory(port) as memory:
        for route, (method, path, headers) in routes.items():
            for kind, (type_header, body) in _big_bodies().items():
                for chunked in (True, False):
                    name = f"{route}, {kind}, {'chunked' if chunked else 'Content-Length'}"
                    results[name] = send_slowly(port, method, path, {**headers, **type_header}, body, chunked)
    for name, result in results.items():
        print(f"{name}: {result.status} after {result.sent} bytes, {result.seconds:.2f}s")
    print(f"API server memory: {memory.base / 2**20:.0f} MiB before, peak {memory.peak / 2**20:.0f} MiB")
    assert {name: r.status for name, r in results.items()} == dict.fromkeys(results, 413)
    # Refused while it arrived: long before the 12 MB were sent (the pacing leaves the server time).
    assert max(r.sent for r in results.values()) < BIG // 2, results
    assert memory.peak - memory.base < 64 * 2**20

    # Positive control: the same routes take a body within the limit.
    assert (
        webhook(CONN_A, "attack", WEBHOOK_A, json={**GOOD, "pad": "x" * 60_000})(
            attack.airflow.url
        ).status_code
        == 200
    )
    small = requests.post(
        f"{attack.airflow.url}/ahachat/approvals/answer?t=x",
        data={"messenger_user_id": OWNER, "pad": "x" * 60_000},
        timeout=120,
    )
    assert (small.status_code, small.headers[OUTCOME_HEADER]) == (200, "malformed")


# -- 4. every value escaped before it is logged


SEPARATORS = {
    "CR": "\r",
    "LF": "\n",
    "CRLF": "\r\n",
    "NEL U+0085": "\x85",
    "LS U+2028": "\u2028",
    "PS U+2029": "\u2029",
    "VT": "\x0b",
    "FF": "\x0c",
    "FS": "\x1c",
    "ESC, erase line": "\x1b[2K\r",
    "RLO U+202E": "\u202e",
}


def test_every_value_a_caller_sends_is_escaped_before_it_is_logged(attack: Attack) -> None:
    url = attack.airflow.url
    real = button(attack, "Hạn dài (long)?", "deadline")
    for n, separator in enumerate(SEPARATORS.values()):
        mark = f"Ⓕ{n}"
        forged = f"1{separator}{mark}"  # short: logged values are cut, this must fit in what is quoted
        assert call(real.replace("{{messenger_user_id}}", quote(forged, safe="")), OWNER)[0] == "not_approver"
        tap = f"{url}/ahachat/approvals/answer?t=x"
        for sent in (
            requests.post(tap, data={"messenger_user_id": forged}, timeout=120),
            requests.post(tap, json={"messenger_user_id": forged}, timeout=120),
        ):
            assert sent.headers[OUTCOME_HEADER] == "malformed"
        # A line feed in the path stops Airflow's own router before the plugin (404: not routed).
        event = quote(f"attack{separator}{mark}", safe="")
        assert webhook(CONN_A, event, WEBHOOK_A, json=GOOD)(url).status_code in (404, 422)
        conn = quote(f"shop{separator}{mark}", safe="")
        assert webhook(conn, "attack", WEBHOOK_A, json=GOOD)(url).status_code in (404, 401)
        assert (
            webhook(CONN_A, "attack", WEBHOOK_A, json={"messenger_user_id": forged})(url).status_code == 422
        )

    lines = log_lines(attack)
    marked = [line for line in lines if "Ⓕ" in line]
    ours = ("AhaChat HITL answer refused", "AhaChat webhook refused")
    # Every line that quotes a forged value is one of ours (or the access log's, which encodes it),
    # and quotes it escaped: no line starts with what a caller sent.
    for line in marked:
        assert any(0 <= line.find(prefix) < line.find("Ⓕ") for prefix in (*ours, "/ahachat/")), line
    quoted = [line for line in marked if any(prefix in line for prefix in ours)]
    assert len(quoted) >= 2 * len(SEPARATORS)  # the tap's audit lines and the webhook's event
    for line in quoted:
        assert not any(c in line for c in ("\x1b", "\u202e", "\x85", "\u2028", "\u2029")), repr(line)
    assert "\\u2028Ⓕ4" in "\n".join(quoted) and "\\r\\nⒻ2" in "\n".join(quoted)


# -- 5. no secret comes back


def test_no_secret_comes_back_in_an_answer_an_event_or_a_log_line(attack: Attack) -> None:
    url = attack.airflow.url
    # Both connections are read once, as any first call reads them.
    webhook(CONN_B, "attack", SECRET_B, json=GOOD)(url)
    real = button(attack, "Hạn dài (long)?", "deadline")
    answers: list[requests.Response] = []
    for name, secret in attack.secrets.items():
        calls = {
            "messenger_user_id (JSON)": webhook(
                CONN_A, "attack", WEBHOOK_A, json={"messenger_user_id": secret}
            ),
            "messenger_user_id (form)": webhook(
                CONN_A, "attack", WEBHOOK_A, data={"messenger_user_id": secret}
            ),
            "messenger_user_id (multipart)": webhook(
                CONN_A, "attack", WEBHOOK_A, files={"messenger_user_id": (None, secret)}
            ),
            "Content-Type": webhook(
                CONN_A, "attack", WEBHOOK_A, data=b"{}", headers={"Content-Type": secret}
            ),
            "Content-Type parameter": webhook(
                CONN_A,
                "attack",
                WEBHOOK_A,
                json=GOOD,
                headers={"Content-Type": f"application/json; x={secret}"},
            ),
            "other headers": webhook(
                CONN_A,
                "attack",
                WEBHOOK_A,
                json=GOOD,
                headers={"X-Debug": secret, "User-Agent": secret, "Idempotency-Key": f"k{secret}"},
            ),
            "form fields": webhook(
                CONN_A, "attack", WEBHOOK_A, data={**GOOD, "note": secret, secret: "a name"}
            ),
            "JSON fields": webhook(
                CONN_A, "attack", WEBHOOK_A, json={**GOOD, "note": [f"x{secret}y"], secret: "a name"}
            ),
            "the event's name": webhook(CONN_A, secret, WEBHOOK_A, json=GOOD),
            "no secret, the body": webhook(CONN_A, "attack", None, json={"messenger_user_id": secret}),
        }
        for case, send in calls.items():
            answer = send(url)
            assert answer.status_code in (200, 400, 404, 401, 415, 422), (name, case, answer.text)
            answers.append(answer)
        for tap in (
            lambda s=secret: requests.get(real.replace("{{messenger_user_id}}", s), timeout=120),
            lambda s=secret: requests.get(
                f"{url}/ahachat/approvals/answer?t={s}&messenger_user_id={s}", timeout=120
            ),
            lambda s=secret: requests.post(
                f"{url}/ahachat/approvals/answer?t=x", data={"messenger_user_id": s}, timeout=120
            ),
            lambda s=secret: requests.post(
                f"{url}/ahachat/approvals/answer?t=x", json={"messenger_user_id": s}, timeout=120
            ),
        ):
            answers.append(tap())
    secrets = list(attack.secrets.values())
    echoed = [
        (answer.request.method, answer.request.url, answer.status_code, answer.text, dict(answer.headers))
        for answer in answers
        if fragments(answer.text + json.dumps(dict(answer.headers)), secrets)
    ]
    assert echoed == []
    assert fragments(json.dumps(recorded(attack, "attack")), secrets) == []
    # Airflow's access log prints a request's path as it came (a secret sent as the event's name
    # is there); it masks query values with Airflow's masker, which knows these secrets.
    sent_in_path = [quote(s, safe="") for s in secrets] + secrets
    kept = [
        line
        for line in log_lines(attack)
        if not any(f"/ahachat/webhooks/{CONN_A}/{s}" in line for s in sent_in_path)
    ]
    assert [line for line in kept if fragments(line, secrets)] == []

    # Positive control: the fields that hold a secret are stored as ***, the rest as sent.
    fields = [e["fields"] for e in recorded(attack, "attack") if e["fields"].get("note")]
    assert fields and all(f["note"] in ("***", ["***"]) for f in fields)
    assert any(f.get("order_code") == "DH10231" for f in fields)


# -- 6. nesting


def _nested(depth: int, kind: str) -> str:
    opening = {"objects": '{"a": ', "arrays": "[", "mixed": '[{"a": '}[kind]
    closing = {"objects": "}", "arrays": "]", "mixed": "}]"}[kind]
    levels = depth if kind != "mixed" else depth // 2
    return opening * levels + "1" + closing * levels


def under_a_field(depth: int) -> str:
    """A webhook body whose field ``x`` holds ``depth`` nested arrays (one level more in all)."""
    return f'{{"messenger_user_id": "{LAN}", "x": {_nested(depth, "arrays")}}}'


def test_nesting_deeper_than_the_limit_is_a_400_not_a_500(attack: Attack) -> None:
    url = attack.airflow.url
    deep = {
        "8,000 nested objects": _nested(8000, "objects"),
        "5,000 nested arrays": _nested(5000, "arrays"),
        "8,000 levels, arrays and objects": _nested(8000, "mixed"),
        f"{MAX_DEPTH + 1} levels, under a field": under_a_field(MAX_DEPTH),
    }
    for case, body in deep.items():
        for content_type in ("application/json", "application/merge-patch+json"):
            answer = webhook(
                CONN_A, "attack", WEBHOOK_A, data=body.encode(), headers={"Content-Type": content_type}
            )(url)
            assert answer.status_code == 400, (case, answer.status_code, answer.text[:300])
            assert "nested deeper than" in answer.json()["error"]
        tap = requests.post(
            f"{url}/ahachat/approvals/answer?t=x",
            data=body,
            headers={"Content-Type": "application/json"},
            timeout=120,
        )
        assert tap.status_code == 400, (case, tap.text[:300])
    assert "RecursionError" not in attack.airflow.log_tail(10**9)

    # Positive control: up to the limit, JSON is taken; a form's fields are text at any depth.
    at_limit = under_a_field(MAX_DEPTH - 1)
    assert (
        webhook(
            CONN_A, "attack", WEBHOOK_A, data=at_limit.encode(), headers={"Content-Type": "application/json"}
        )(url).status_code
        == 200
    )
    as_text = _nested(8000, "arrays")
    for sent in (
        {"data": {**GOOD, "x": as_text}},
        {"files": {"messenger_user_id": (None, LAN), "x": (None, as_text)}},
    ):
        assert webhook(CONN_A, "attack", WEBHOOK_A, **sent)(url).status_code == 200
    texts = [e["fields"].get("x") for e in recorded(attack, "attack")]
    assert texts.count(as_text) == 2


# -- 7. the task's own state and deadline


def test_the_tasks_own_state_and_deadline_decide_whether_a_tap_answers(attack: Attack) -> None:
    short = button(attack, "Hạn ngắn?", "deadline")
    marked = {
        state: button(attack, f"Hạn dài (marked_{state})?", "deadline") for state in ("failed", "success")
    }
    long = button(attack, "Hạn dài (long)?", "deadline")
    short_tok = token_of(short)
    nonce = question_of(attack.airflow, short_tok).nonce

    def later(token: AnswerToken) -> str:
        """A validly signed token for the same question with a later expiry."""
        return with_token(
            short, sign(dataclasses.replace(token, expires=int(time.time()) + 3600), APPROVAL_A, nonce)
        )

    # Past its deadline, still waiting (the scheduler's sweep is held): no tap answers it.
    wait_for_park(attack.airflow, short_tok)
    wait_until(lambda: time.time() > short_tok.expires + 1, 120, "the short question's deadline", 0.5)
    assert ti_state(attack, short_tok) == "awaiting_input"
    assert call(short, OWNER)[0] == "expired"
    assert call(later(short_tok), OWNER)[0] == "expired"
    assert hitl(attack, short_tok)["response_received"] is False

    # Marked failed or successful by hand while waiting, before its deadline: no tap answers it.
    for state, url in marked.items():
        token = token_of(url)
        wait_for_park(attack.airflow, token)
        patched = requests.patch(
            f"{attack.airflow.url}/api/v2/dags/{token.dag_id}/dagRuns/{token.run_id}/taskInstances/{token.task_id}",
            json={"new_state": state},
            timeout=120,
        )
        assert patched.status_code == 200, patched.text
        assert call(url, OWNER)[0] == "closed"
        assert (ti_state(attack, token), hitl(attack, token)["response_received"]) == (state, False)

    # Once the scheduler sweeps, the task fails on its timeout; still nothing answers it.
    attack.gate.unlink()
    wait_until(lambda: ti_state(attack, short_tok) == "failed", WAIT, "the sweep to fail the short task", 1.0)
    assert call(later(short_tok), OWNER)[0] == "expired"
    assert hitl(attack, short_tok)["response_received"] is False

    # Positive control: a task that waits, before its deadline, is answered by its button.
    assert tap_for_real(attack, long) == "recorded"
    assert hitl(attack, token_of(long))["chosen_options"] == ["Approve"]
