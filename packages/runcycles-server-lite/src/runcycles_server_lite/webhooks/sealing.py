"""Signing secrets at rest: sealed with AES-256-GCM when a key is configured.

The dispatcher needs each subscription's secret in the clear to sign deliveries, so it cannot
be hashed like an API key; sealing keeps it out of Redis dumps, replicas and backups. The key
is ``WEBHOOK_SECRET_ENCRYPTION_KEY`` (the reference server's setting: 32 bytes, base64), or one
the embedded store keeps in its data dir. The subscription id is bound in as associated data,
so a sealed secret copied onto another subscription does not open. Records written without a
key (plaintext) still work, and are sealed the next time their secret is set.
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "SEALED_PREFIX",
    "SecretBox",
    "SecretUnavailable",
    "box_for",
    "new_key",
    "open_secret",
    "seal",
]

SEALED_PREFIX = "aesgcm:v1:"
_NONCE_BYTES = 12


class SecretUnavailable(Exception):
    """A sealed secret that this server cannot open (no key, or not the key it was sealed with)."""


def new_key() -> str:
    """A fresh key in the form ``WEBHOOK_SECRET_ENCRYPTION_KEY`` takes."""
    return base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()


class SecretBox:
    """AES-256-GCM over one key; seal and open subscription secrets."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError(
                f"WEBHOOK_SECRET_ENCRYPTION_KEY must decode to 32 bytes (got {len(key)}); "
                'make one with: python -c "import base64, os; '
                'print(base64.b64encode(os.urandom(32)).decode())"'
            )
        self._aead = AESGCM(key)

    @classmethod
    def from_text(cls, text: str) -> SecretBox:
        """From the base64 text of ``WEBHOOK_SECRET_ENCRYPTION_KEY`` (standard or url-safe)."""
        raw = text.strip().translate(str.maketrans("-_", "+/"))
        try:
            key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("WEBHOOK_SECRET_ENCRYPTION_KEY is not base64") from None
        return cls(key)

    def seal(self, secret: str, subscription_id: str) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, secret.encode(), subscription_id.encode())
        return SEALED_PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, stored: str, subscription_id: str) -> str:
        blob = base64.urlsafe_b64decode(stored[len(SEALED_PREFIX) :])
        try:
            plain = self._aead.decrypt(
                blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], subscription_id.encode()
            )
        except InvalidTag:
            raise SecretUnavailable(
                f"the signing secret of {subscription_id} was sealed with another "
                "WEBHOOK_SECRET_ENCRYPTION_KEY"
            ) from None
        return plain.decode()


def box_for(key: str | None) -> SecretBox | None:
    """The box for a configured ``WEBHOOK_SECRET_ENCRYPTION_KEY``, or None when there is none."""
    return SecretBox.from_text(key) if key else None


def seal(box: SecretBox | None, secret: str, subscription_id: str) -> str:
    """What to store for ``secret``: sealed with ``box``, or as it is when there is no key."""
    return box.seal(secret, subscription_id) if box is not None else secret


def open_secret(box: SecretBox | None, stored: str, subscription_id: str) -> str:
    """The secret in the clear from its stored form (sealed or plaintext)."""
    if not stored.startswith(SEALED_PREFIX):
        return stored
    if box is None:
        raise SecretUnavailable(
            f"the signing secret of {subscription_id} is sealed and no "
            "WEBHOOK_SECRET_ENCRYPTION_KEY is set"
        )
    return box.open(stored, subscription_id)
