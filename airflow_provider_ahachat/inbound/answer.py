"""
The answer endpoint: where a Messenger button's tap arrives, at ``/ahachat/approvals/answer``.

``GET`` or ``POST /ahachat/approvals/answer?t=<token>&messenger_user_id=<who tapped>``
    AhaChat calls the button's URL when the person taps it, filling ``{{messenger_user_id}}`` with
    the tapper's ID. What the token claims says which question it answers; the question's record
    (:class:`~airflow_provider_ahachat.inbound.tokens.Question`, written by the task when it
    asked, ``load_question``) says through which connection it was asked, by which try, with which
    nonce and until when. The token must verify with that connection's approval key and that
    nonce, and must not have expired; the tapper must be the approver it was made for; then the
    answer goes to Airflow (``record``), which decides from the task instance itself whether it
    may still be answered: waiting for input, on this try, before its deadline, unanswered, by an
    assigned user. The answer is 200 in AhaChat's JSON API format, a short text the person sees
    ("Đã ghi nhận: Đồng ý", or why nothing was recorded), with the outcome in the
    ``X-AhaChat-Approval`` header; a ``POST`` body that breaks the plugin's rules
    (:mod:`airflow_provider_ahachat.inbound.intake`) gets 400, 413 or 415 instead. Every tap writes
    one audit line (logger ``airflow_provider_ahachat.approvals.audit``): who, what, for which task
    instance, and the outcome, every value escaped; never the token or a secret.

Plain FastAPI: Airflow is behind the callables given to :func:`approvals_router`.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from airflow_provider_ahachat.inbound.intake import Refused, loggable, parse_fields, read_body
from airflow_provider_ahachat.inbound.tokens import AnswerToken, Question, TokenError, peek, verify

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
    "closed": "Không ghi nhận: câu hỏi không còn chờ trả lời.",
    "not_assigned": "Không ghi nhận: bạn không có trong danh sách người duyệt.",
    "bad_option": "Không ghi nhận: không có lựa chọn này.",
    "no_question": "Không ghi nhận: không còn câu hỏi này.",
    "unavailable": "Chưa ghi nhận: Airflow đang bận, bạn thử lại sau ít phút nhé.",
}

#: ``load_question(claim) -> Question | None``: the record of the question a token claims to
#: answer (its task instance and connection), None if that task never asked through that
#: connection (in a worker thread).
LoadQuestion = Callable[[AnswerToken], "Question | None"]
#: ``record(token, question) -> outcome``: records a verified answer in Airflow (in a worker thread).
RecordAnswer = Callable[[AnswerToken, Question], str]

#: A Messenger user ID, as the audit lines quote it.
_MESSENGER_ID = re.compile(r"[0-9]{1,32}")
#: The most characters an audit line quotes of a tapper that is not a Messenger ID (it may be
#: anything: a placeholder AhaChat did not fill, or a secret this process has never loaded).
_UNTRUSTED_PREVIEW = 6
#: The most characters of a task instance's names and options (the DAG's) an audit line quotes.
_NAME_PREVIEW = 250


def approvals_router(
    *,
    load_question: LoadQuestion,
    load_secret: Callable[[str], str | None],
    record: RecordAnswer,
    clock: Callable[[], float] = time.time,
) -> APIRouter:
    """
    The answer endpoint.

    :param load_question: the record of the question a token claims to answer; see
        :data:`LoadQuestion`.
    :param load_secret: the approval secret of a connection ID, None if it has none (called in a
        worker thread).
    :param record: records a verified answer; returns ``recorded`` or the reason nothing was.
    :param clock: the time, in seconds since the epoch.
    """
    router = APIRouter(prefix="/approvals")
    decide = _Decision(load_question, load_secret, record, clock)

    async def answer(request: Request) -> JSONResponse:
        try:
            signed, tapper = await _inputs(request)
        except Refused as refused:
            audit_log.warning("AhaChat HITL answer refused (%s): %s", refused.status, refused.message)
            return JSONResponse({"error": refused.message}, refused.status, headers=refused.headers)
        outcome, token = await decide(signed, tapper)
        _audit(outcome, tapper, token)
        text = REPLIES.get(outcome, REPLIES["no_question"]).format(label=token.label if token else "")
        return JSONResponse({"messages": [{"text": text}]}, headers={OUTCOME_HEADER: outcome})

    router.add_api_route("/answer", answer, methods=["GET", "POST"], include_in_schema=False)
    return router


async def _inputs(request: Request) -> tuple[str, str]:
    """The token and the tapper, from the query (and a ``POST`` body, read within the rules)."""
    signed = request.query_params.get("t") or ""
    tapper: Any = request.query_params.get("messenger_user_id")
    if request.method == "POST":
        body = await read_body(request)
        fields = await parse_fields(request, body) if body.strip() else {}
        tapper = tapper if tapper is not None else fields.get("messenger_user_id")
    return signed, "" if tapper is None else str(tapper).strip()


class _Decision:
    """Whether a tap answers its question: the token, its question's record, then Airflow."""

    def __init__(
        self,
        load_question: LoadQuestion,
        load_secret: Callable[[str], str | None],
        record: RecordAnswer,
        clock: Callable[[], float],
    ) -> None:
        self.load_question = load_question
        self.load_secret = load_secret
        self.record = record
        self.clock = clock

    async def __call__(self, signed: str, tapper: str) -> tuple[str, AnswerToken | None]:
        token: AnswerToken | None = None
        try:
            question, token = await self.verified(signed)
            if tapper != token.approver:
                return "not_approver", token
            return await run_in_threadpool(self.record, token, question), token
        except TokenError as err:
            return err.reason, token
        except Exception:  # the database or Airflow failed: say so, record the reason, not the token
            audit_log.exception("AhaChat HITL answer from %s could not be recorded", _who(tapper))
            return "unavailable", token

    async def verified(self, signed: str) -> tuple[Question, AnswerToken]:
        """The question's record and the token, verified against it; :class:`TokenError` if not."""
        claim = peek(signed)
        if claim is None:
            raise TokenError("malformed")
        question = await run_in_threadpool(self.load_question, claim)
        if question is None or question.conn_id != claim.conn_id:
            raise TokenError("forged")  # the task never asked through the connection it names
        if claim.try_number < question.try_number:
            raise TokenError("earlier_try")
        secret = await run_in_threadpool(self.load_secret, question.conn_id)
        if secret is None:
            raise TokenError("forged")
        now = self.clock()
        token = verify(signed, secret, question.nonce, now=now)
        if token.try_number != question.try_number:
            raise TokenError("forged")
        if now >= question.expires:
            raise TokenError("expired")
        return question, token


def _who(tapper: str) -> str:
    """The tapper as an audit line names them: a Messenger ID, or what else came, barely quoted."""
    if not tapper:
        return "?"
    if _MESSENGER_ID.fullmatch(tapper):
        return f"ahachat:{tapper}"
    return f"(not a Messenger ID: {loggable(tapper, _UNTRUSTED_PREVIEW)})"


def _audit(outcome: str, tapper: str, token: AnswerToken | None) -> None:
    if token is None:
        audit_log.warning("AhaChat HITL answer refused (%s): tapped by %s", outcome, _who(tapper))
        return
    where = (
        f"dag_id={loggable(token.dag_id, _NAME_PREVIEW)} run_id={loggable(token.run_id, _NAME_PREVIEW)} "
        f"task_id={loggable(token.task_id, _NAME_PREVIEW)} map_index={token.map_index} try={token.try_number}"
    )
    option = loggable(token.option, _NAME_PREVIEW)
    if outcome == "recorded":
        audit_log.info(
            "AhaChat HITL answer recorded: %s chose '%s' for %s",
            _who(token.approver),
            option,
            where,
        )
    else:
        audit_log.warning(
            "AhaChat HITL answer refused (%s): %s tapped '%s' meant for %s, %s",
            outcome,
            _who(tapper),
            option,
            _who(token.approver),
            where,
        )
