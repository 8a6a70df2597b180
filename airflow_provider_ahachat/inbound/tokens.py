"""
Signed answer tokens: what one Messenger button may answer, and for whom.

A token is ``<payload>.<signature>``, both base64url without padding. The payload is compact JSON
naming the connection, the task instance (DAG, run, task, map index), its try number, the
approver, the option the button chooses (its index and its label) and the moment the token
expires. The signature is HMAC-SHA256 over the payload with the key of one question:

    question key = HMAC-SHA256(approval key, "question:" + nonce)
    approval key = HKDF-SHA256(approval secret, info="ahachat-approval-v1")

The approval secret is the connection's ``approval_secret``, else its ``webhook_secret``; the key
derived from it for approvals is not the key the webhook checks (:mod:`.keys`).
The nonce is random, one per question (task instance, try and connection), and is recorded by the
task when it asks (:class:`Question`, in an XCom only the task writes) and never sent in a button:
a token verifies only with the secret **and** the record of the question it answers, so it crosses
no connection, DAG, run, task, map index or try, and knowing a secret alone forges nothing. Plain
Python: no Airflow import.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import asdict, dataclass, fields
from typing import Any

from airflow_provider_ahachat.inbound.keys import APPROVAL, derive_key

__all__ = [
    "QUESTION_XCOM_PREFIX",
    "AnswerToken",
    "Question",
    "TokenError",
    "peek",
    "secret_from_extra",
    "sign",
    "verify",
]

#: The XCom key prefix of a question's record; the connection's ID follows (one record each).
QUESTION_XCOM_PREFIX = "ahachat_question."
#: The token format; tokens of another version (0.4's) verify as forged.
_VERSION = 2


class TokenError(ValueError):
    """A token that grants nothing; ``reason`` is ``malformed``, ``forged`` or ``expired``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class AnswerToken:
    """
    What a token grants: ``approver`` may choose ``option`` for this try of this task instance,
    until ``expires`` (seconds since the epoch).

    :param conn_id: the AhaChat connection whose secret signs it.
    :param dag_id: the DAG.
    :param run_id: the DAG run.
    :param task_id: the task.
    :param map_index: the map index, -1 when not mapped.
    :param try_number: the try that asked the question.
    :param approver: the ``messenger_user_id`` of the person asked.
    :param option: the option the button chooses, as the operator names it.
    :param label: what the button shows, for the confirmation.
    :param expires: when the token stops granting anything, in seconds since the epoch.
    """

    conn_id: str
    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    try_number: int
    approver: str
    option: str
    label: str
    expires: int

    @property
    def airflow_user_id(self) -> str:
        """The user Airflow records as the one who answered."""
        return f"ahachat:{self.approver}"


@dataclass(frozen=True)
class Question:
    """
    What a task records when it asks through a connection, where the API server reads it and a tap
    cannot write it: the try that asked, the question's nonce and its deadline.

    :param conn_id: the connection the question was asked through.
    :param try_number: the try that asked.
    :param nonce: random, secret to the buttons; binds their signatures to this question.
    :param expires: the task's response deadline, in seconds since the epoch.
    """

    conn_id: str
    try_number: int
    nonce: str
    expires: int

    @classmethod
    def new(cls, conn_id: str, try_number: int, expires: int) -> Question:
        """A question with a fresh nonce."""
        return cls(conn_id, try_number, secrets.token_hex(16), expires)

    @property
    def xcom_key(self) -> str:
        """The XCom key the task records it under."""
        return f"{QUESTION_XCOM_PREFIX}{self.conn_id}"

    def to_json(self) -> dict[str, Any]:
        """The record as stored."""
        return asdict(self)

    @classmethod
    def from_json(cls, value: Any) -> Question | None:
        """The record from its stored form; None for anything else."""
        if not isinstance(value, dict):
            return None
        try:
            question = cls(**{name: value[name] for name in ("conn_id", "try_number", "nonce", "expires")})
        except (KeyError, TypeError):
            return None
        types_ok = isinstance(question.conn_id, str) and isinstance(question.nonce, str)
        numbers_ok = all(
            isinstance(n, int) and not isinstance(n, bool) for n in (question.try_number, question.expires)
        )
        return question if types_ok and numbers_ok and len(question.nonce) >= 16 else None


_FIELDS = {
    "c": "conn_id",
    "d": "dag_id",
    "r": "run_id",
    "t": "task_id",
    "m": "map_index",
    "n": "try_number",
    "u": "approver",
    "o": "option",
    "l": "label",
    "e": "expires",
}


def _key(secret: str, nonce: str) -> bytes:
    approval_key = derive_key(secret, APPROVAL)
    return hmac.new(approval_key, b"question:" + nonce.encode("utf-8"), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(token: AnswerToken, secret: str, nonce: str) -> str:
    """
    The signed form of ``token``, safe in a URL's query.

    :param token: what it grants.
    :param secret: the connection's approval secret; never logged.
    :param nonce: the nonce of the question it answers (:class:`Question`); never in the token.
    """
    if not secret or not nonce:
        raise ValueError("the approval secret and the question's nonce must not be empty")
    values = asdict(token)
    payload = json.dumps(
        {"v": _VERSION, **{short: values[name] for short, name in _FIELDS.items()}},
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode("utf-8")
    signature = hmac.new(_key(secret, nonce), payload, hashlib.sha256).digest()
    return f"{_b64(payload)}.{_b64(signature)}"


def _parts(signed: Any) -> tuple[bytes, bytes]:
    if not isinstance(signed, str) or signed.count(".") != 1 or len(signed) > 4096:
        raise TokenError("malformed")
    payload_text, signature_text = signed.split(".")
    try:
        return _unb64(payload_text), _unb64(signature_text)
    except (ValueError, binascii.Error):
        raise TokenError("malformed") from None


def _grant(payload: bytes) -> AnswerToken:
    try:
        data: Any = json.loads(payload)
        token = AnswerToken(**{name: data[short] for short, name in _FIELDS.items()})
    except (ValueError, KeyError, TypeError):
        raise TokenError("malformed") from None
    for each in fields(AnswerToken):  # the types the payload's JSON must have had
        value = getattr(token, each.name)
        wanted = int if each.type == "int" else str
        if not isinstance(value, wanted) or isinstance(value, bool):
            raise TokenError("malformed")
    return token


def peek(signed: str) -> AnswerToken | None:
    """
    What a token claims, unverified: where to find the question it answers. None if unreadable.

    :param signed: the token as it came in the URL.
    """
    try:
        return _grant(_parts(signed)[0])
    except TokenError:
        return None


def verify(signed: str, secret: str, nonce: str, *, now: float) -> AnswerToken:
    """
    The grant of ``signed`` if its signature is right for this question and it has not expired.

    :param signed: the token as it came in the URL.
    :param secret: the connection's approval secret.
    :param nonce: the nonce the task recorded for the question (:class:`Question`).
    :param now: the time, in seconds since the epoch.
    :raises TokenError: ``malformed``, ``forged`` (the signature does not match: altered, signed
        with another secret or for another question, or a token of 0.4) or ``expired``.
    """
    payload, signature = _parts(signed)
    if not secret or not nonce:
        raise TokenError("forged")
    expected = hmac.new(_key(secret, nonce), payload, hashlib.sha256).digest()
    if not hmac.compare_digest(signature, expected):
        raise TokenError("forged")
    token = _grant(payload)
    if now >= token.expires:
        raise TokenError("expired")
    return token


def secret_from_extra(extra: dict[str, Any]) -> str | None:
    """
    The secret that signs a connection's answer tokens: its extra field ``approval_secret``, else
    its ``webhook_secret`` (the key is derived for this use alone either way); None when neither is
    set, and then no question can be asked through it.
    """
    for name in ("approval_secret", "webhook_secret"):
        value = extra.get(name, extra.get(f"extra__ahachat__{name}"))
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None
