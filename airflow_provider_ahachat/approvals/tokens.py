"""
Signed answer tokens: what one Messenger button may answer, and for whom.

A token is ``<payload>.<signature>``, both base64url without padding. The payload is compact JSON
naming the connection, the task instance (DAG, run, task, map index), its try number, the
approver, the option the button chooses (its index and its label) and the moment the token
expires. The signature is HMAC-SHA256 over the payload, with a key derived from the connection's
secret for this purpose only, so a token is worth nothing to the webhook receiver and the other
way round. Plain Python: no Airflow import.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["AnswerToken", "TokenError", "sign", "verify"]

#: Separates this use of the connection's secret from every other.
_PURPOSE = b"ahachat-hitl-answer-v1"


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


def _key(secret: str) -> bytes:
    return hmac.new(secret.encode("utf-8"), _PURPOSE, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(token: AnswerToken, secret: str) -> str:
    """
    The signed form of ``token``, safe in a URL's query.

    :param token: what it grants.
    :param secret: the connection's approval secret; never logged.
    """
    if not secret:
        raise ValueError("the approval secret is empty")
    values = asdict(token)
    payload = json.dumps(
        {short: values[name] for short, name in _FIELDS.items()}, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")
    signature = hmac.new(_key(secret), payload, hashlib.sha256).digest()
    return f"{_b64(payload)}.{_b64(signature)}"


def peek_conn_id(signed: str) -> str | None:
    """The connection a token names, unverified (to find the secret that verifies it), or None."""
    try:
        data = json.loads(_unb64(signed.split(".", 1)[0]))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    conn_id = data.get("c") if isinstance(data, dict) else None
    return conn_id if isinstance(conn_id, str) else None


def verify(signed: str, secret: str, *, now: float) -> AnswerToken:
    """
    The grant of ``signed`` if its signature is right and it has not expired.

    :param signed: the token as it came in the URL.
    :param secret: the connection's approval secret.
    :param now: the time, in seconds since the epoch.
    :raises TokenError: ``malformed``, ``forged`` (the signature does not match: altered, or signed
        with another secret) or ``expired``.
    """
    if not isinstance(signed, str) or signed.count(".") != 1 or len(signed) > 4096:
        raise TokenError("malformed")
    payload_text, signature_text = signed.split(".")
    try:
        payload, signature = _unb64(payload_text), _unb64(signature_text)
    except (ValueError, binascii.Error):
        raise TokenError("malformed") from None
    expected = hmac.new(_key(secret), payload, hashlib.sha256).digest()
    if not secret or not hmac.compare_digest(signature, expected):
        raise TokenError("forged")
    try:
        data: Any = json.loads(payload)
        token = AnswerToken(**{name: data[short] for short, name in _FIELDS.items()})
    except (ValueError, KeyError, TypeError):
        raise TokenError("malformed") from None
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
