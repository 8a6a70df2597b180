"""
The answer endpoint: where a Messenger button's tap arrives, at ``/ahachat/approvals/answer``.

``GET`` or ``POST /ahachat/approvals/answer?t=<token>&messenger_user_id=<who tapped>``
    AhaChat calls the button's URL when the person taps it, filling ``{{messenger_user_id}}`` with
    the tapper's ID. The token (:mod:`.tokens`) must verify with the secret of the connection it
    names and must not have expired; the tapper must be the approver it was made for; then the
    answer goes to Airflow (``record``), which refuses an earlier try, a second answer and a user
    not among the task's assigned users. The answer is always 200 in AhaChat's JSON API format, a
    short text the person sees ("Đã ghi nhận: Đồng ý", or why nothing was recorded), with the
    outcome in the ``X-AhaChat-Approval`` header. Every tap writes one audit line (logger
    ``airflow_provider_ahachat.approvals.audit``): who, what, for which task instance, and the
    outcome; never the token or the secret.

Plain FastAPI: Airflow is behind the two callables given to :func:`approvals_router`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from airflow_provider_ahachat.approvals.tokens import AnswerToken, TokenError, peek_conn_id, verify

__all__ = ["OUTCOME_HEADER", "REPLIES", "approvals_router"]

audit_log = logging.getLogger("airflow_provider_ahachat.approvals.audit")

#: The header that carries the outcome, for tests and monitoring.
OUTCOME_HEADER = "X-AhaChat-Approval"

#: What the person reads after a tap, by outcome (``recorded`` is followed by the button's label).
REPLIES = {
    "recorded": "Đã ghi nhận: {label}",
    "malformed": "Không ghi nhận: nút này không hợp lệ.",
    "forged": "Không ghi nhận: nút này không hợp lệ.",
    "expired": "Không ghi nhận: câu hỏi đã hết hạn trả lời.",
    "not_approver": "Không ghi nhận: câu hỏi này dành cho người khác.",
    "answered": "Không ghi nhận: câu hỏi đã có câu trả lời.",
    "earlier_try": "Không ghi nhận: câu hỏi này đã được thay bằng câu hỏi mới.",
    "not_assigned": "Không ghi nhận: bạn không có trong danh sách người duyệt.",
    "bad_option": "Không ghi nhận: không có lựa chọn này.",
    "no_question": "Không ghi nhận: không còn câu hỏi này.",
    "unavailable": "Chưa ghi nhận: Airflow đang bận, bạn thử lại sau ít phút nhé.",
}

#: ``record(token) -> outcome``: records the token's answer in Airflow (in a worker thread).
RecordAnswer = Callable[[AnswerToken], str]


def approvals_router(
    *,
    load_secret: Callable[[str], str | None],
    record: RecordAnswer,
    clock: Callable[[], float] = time.time,
) -> APIRouter:
    """
    The answer endpoint.

    :param load_secret: the approval secret of a connection ID, None if it has none (called in a
        worker thread).
    :param record: records a verified answer; returns ``recorded`` or the reason nothing was.
    :param clock: the time, in seconds since the epoch.
    """
    router = APIRouter(prefix="/approvals")

    async def answer(request: Request) -> JSONResponse:
        signed = request.query_params.get("t") or ""
        tapper = request.query_params.get("messenger_user_id")
        if tapper is None and request.method == "POST":
            tapper = await _body_field(request, "messenger_user_id")
        tapper = (tapper or "").strip()
        conn_id = peek_conn_id(signed)
        token: AnswerToken | None = None
        try:
            if conn_id is None:
                raise TokenError("malformed")
            secret = await run_in_threadpool(load_secret, conn_id)
            if secret is None:
                raise TokenError("forged")
            token = verify(signed, secret, now=clock())
            if tapper != token.approver:
                outcome = "not_approver"
            else:
                outcome = await run_in_threadpool(record, token)
        except TokenError as err:
            outcome = err.reason
        except Exception:  # the database or Airflow failed: say so, record the reason, not the token
            audit_log.exception("AhaChat HITL answer from %s could not be recorded", tapper or "?")
            outcome = "unavailable"
        _audit(outcome, tapper, token)
        text = REPLIES.get(outcome, REPLIES["no_question"]).format(label=token.label if token else "")
        return JSONResponse({"messages": [{"text": text}]}, headers={OUTCOME_HEADER: outcome})

    router.add_api_route("/answer", answer, methods=["GET", "POST"], include_in_schema=False)
    return router


async def _body_field(request: Request, name: str) -> str | None:
    try:
        if request.headers.get("content-type", "").startswith("application/json"):
            body: Any = await request.json()
        else:
            body = dict(await request.form())
    except Exception:
        return None
    value = body.get(name) if isinstance(body, dict) else None
    return None if value is None else str(value)


def _audit(outcome: str, tapper: str, token: AnswerToken | None) -> None:
    if token is None:
        audit_log.warning("AhaChat HITL answer refused (%s): tapped by %s", outcome, tapper or "?")
        return
    where = (
        f"dag_id={token.dag_id} run_id={token.run_id} task_id={token.task_id} "
        f"map_index={token.map_index} try={token.try_number}"
    )
    if outcome == "recorded":
        audit_log.info(
            "AhaChat HITL answer recorded: %s chose %r for %s", token.airflow_user_id, token.option, where
        )
    else:
        audit_log.warning(
            "AhaChat HITL answer refused (%s): %s tapped %r meant for ahachat:%s, %s",
            outcome,
            f"ahachat:{tapper}" if tapper else "?",
            token.option,
            token.approver,
            where,
        )
