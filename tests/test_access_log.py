"""
The approval tokens of Messenger taps stay out of the access log of the server that receives them:
a real uvicorn with its access log on, as Airflow 3.1's API server runs it, and the plugin's filter.
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import uvicorn
from fastapi import FastAPI
from uvicorn.logging import AccessFormatter

from airflow_provider_ahachat.inbound import access_log
from airflow_provider_ahachat.inbound.answer import approvals_router

TOKEN = "eyJjIjoic2hvcCIsImQiOiJyZWZ1bmQifQ.c2lnbmF0dXJlLW9mLXRoZS10b2tlbg"


@pytest.fixture
def access_lines() -> Iterator[tuple[str, io.StringIO]]:
    """A uvicorn server of the answer endpoint that logs each request; its URL and its access log."""
    app = FastAPI()
    app.include_router(
        approvals_router(
            load_question=lambda token: None,
            load_secret=lambda conn_id: None,
            record=lambda token, question: "recorded",
        )
    )
    logger = logging.getLogger("uvicorn.access")
    lines = io.StringIO()
    handler = logging.StreamHandler(lines)
    handler.setFormatter(
        AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s', use_colors=False)
    )
    level, propagate = logger.level, logger.propagate
    # Installed already if this process built the plugin's app: taken off for the test, then put back.
    before = [f for f in logger.filters if isinstance(f, access_log.AnswerTokenFilter)]
    for installed in before:
        logger.removeFilter(installed)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    config = uvicorn.Config(app, host="127.0.0.1", port=0, access_log=True, log_config=None, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            thread.join(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}", lines
    finally:
        server.should_exit = True
        thread.join(30)
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
        for installed in [f for f in logger.filters if isinstance(f, access_log.AnswerTokenFilter)]:
            logger.removeFilter(installed)
        for installed in before:
            logger.addFilter(installed)


def tap(url: str, method: str, query: str) -> None:
    answer = requests.request(method, f"{url}/approvals/answer?{query}", timeout=30)
    assert answer.status_code == 200


TAPS = [
    ("GET", f"t={TOKEN}&messenger_user_id=42"),
    ("POST", f"t={TOKEN}&messenger_user_id=42"),
    ("GET", f"messenger_user_id=42&t={TOKEN}"),
    ("GET", f"t={TOKEN.replace('.', '%2E')}"),
    ("GET", f"messenger_user_id=42&t={TOKEN}#fragment"),
]


def test_without_the_filter_uvicorn_logs_the_token(access_lines: tuple[str, io.StringIO]) -> None:
    """What Airflow 3.1's API server writes: the reason for the filter."""
    url, lines = access_lines
    tap(url, "GET", f"t={TOKEN}&messenger_user_id=42")
    assert TOKEN in lines.getvalue()


@pytest.mark.parametrize(("method", "query"), TAPS)
def test_the_filter_masks_the_token_of_every_tap(
    access_lines: tuple[str, io.StringIO], method: str, query: str
) -> None:
    url, lines = access_lines
    access_log.install()
    access_log.install()  # once is enough: a second call adds nothing
    assert (
        sum(isinstance(f, access_log.AnswerTokenFilter) for f in logging.getLogger("uvicorn.access").filters)
        == 1
    )
    tap(url, method, query)
    logged = lines.getvalue()
    assert f"{method} /approvals/answer?" in logged
    assert "t=***" in logged
    assert "c2lnbmF0dXJl" not in logged and "eyJ" not in logged


def test_the_filter_leaves_other_requests_alone(access_lines: tuple[str, io.StringIO]) -> None:
    url, lines = access_lines
    access_log.install()
    requests.get(f"{url}/elsewhere?t=visible&x=1", timeout=30)
    assert "/elsewhere?t=visible&x=1" in lines.getvalue()
    assert access_log.mask_answer_tokens("GET /elsewhere?t=visible") == "GET /elsewhere?t=visible"
    assert (
        access_log.mask_answer_tokens(f"GET /approvals/answer?t={TOKEN} 200")
        == "GET /approvals/answer?t=*** 200"
    )


@pytest.mark.parametrize(
    "args",
    [
        ("127.0.0.1:5", "GET", f"/ahachat/approvals/answer?t={TOKEN}", "1.1", 200),
        {"r": f"GET /ahachat/approvals/answer?t={TOKEN}&messenger_user_id=1 HTTP/1.1", "q": f"t={TOKEN}"},
    ],
    ids=["uvicorn", "gunicorn"],
)
def test_the_filter_masks_a_record_in_either_servers_form(args: Any) -> None:
    record = logging.LogRecord("gunicorn.access", logging.INFO, __file__, 1, "%s", (args,), None)
    record.args = args
    assert access_log.AnswerTokenFilter().filter(record)
    assert TOKEN not in repr(record.args)
    assert "t=***" in repr(record.args)
