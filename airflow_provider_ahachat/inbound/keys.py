"""
Keys derived from a connection's secrets, one per purpose, so that no key is ever a secret itself.

A connection may have one secret (``webhook_secret``) or two (``webhook_secret`` and
``approval_secret``). Each use gets its own key, derived with HKDF-SHA256 (RFC 5869): the secret is
the input keying material, the purpose label is the ``info``. The webhook compares the derived key of
the secret it is sent with the derived key of the stored one; an approval button is signed with the
approval key. A key for one purpose says nothing about the secret or about the key for another, so
what the webhook's callers know (the secret pasted into the bot's blocks) never signs an approval
by itself. Plain Python: no Airflow import.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["APPROVAL", "WEBHOOK", "derive_key", "hkdf_sha256"]

#: The purpose of the key that checks the webhook's ``X-AhaChat-Secret``.
WEBHOOK = b"ahachat-webhook-v1"
#: The purpose of the key that signs approval buttons.
APPROVAL = b"ahachat-approval-v1"
#: HKDF's salt: fixed and public, as RFC 5869 allows; it only separates this provider's keys.
_SALT = b"airflow-provider-ahachat"


def hkdf_sha256(key_material: bytes, *, salt: bytes, info: bytes, length: int = 32) -> bytes:
    """
    HKDF with SHA-256 (RFC 5869): extract a pseudorandom key from ``key_material`` with ``salt``,
    then expand it to ``length`` bytes for ``info``.

    :param key_material: the input keying material (a secret).
    :param salt: the salt (may be empty).
    :param info: what the key is for.
    :param length: how many bytes, at most 255 * 32.
    """
    if length > 255 * hashlib.sha256().digest_size:
        raise ValueError("HKDF-SHA256 gives at most 8160 bytes")
    prk = hmac.new(salt or b"\x00" * 32, key_material, hashlib.sha256).digest()
    blocks, block = [], b""
    for counter in range(1, -(-length // 32) + 1):
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        blocks.append(block)
    return b"".join(blocks)[:length]


def derive_key(secret: str, purpose: bytes) -> bytes:
    """
    The 32-byte key of ``secret`` for ``purpose`` (:data:`WEBHOOK` or :data:`APPROVAL`).

    :param secret: a connection's secret, as configured.
    :param purpose: the purpose label.
    """
    return hkdf_sha256(secret.encode("utf-8"), salt=_SALT, info=purpose)
