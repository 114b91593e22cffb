"""Key-encryption keys: the interface a KMS plugs into, and the local AES-256-GCM one."""

from __future__ import annotations

import re
import secrets
from typing import Protocol, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from valetkey.crypto.errors import DecryptionError, InvalidKek

KEY_BYTES = 32
NONCE_BYTES = 12
_KEK_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def check_kek_id(kek_id: str) -> str:
    """Return ``kek_id`` if it is 1-64 characters of ``A-Za-z0-9._-``, else raise InvalidKek."""
    if not isinstance(kek_id, str) or not _KEK_ID.match(kek_id):
        raise InvalidKek("a key id is 1-64 characters of A-Z, a-z, 0-9, '.', '_' and '-'")
    return kek_id


@runtime_checkable
class KeyEncryptionKey(Protocol):
    """Wraps and unwraps data keys. ``unwrap`` raises DecryptionError when it cannot."""

    @property
    def id(self) -> str: ...

    def wrap(self, dek: bytes, aad: bytes) -> bytes: ...

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes: ...


class LocalKek:
    """A 32-byte KEK in process memory; wraps as ``nonce(12) || AES-256-GCM(dek) || tag(16)``."""

    __slots__ = ("_aead", "_id", "_key")

    def __init__(self, kek_id: str, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise InvalidKek(f"a key-encryption key is {KEY_BYTES} bytes, got {len(key)}")
        self._id = check_kek_id(kek_id)
        self._key = bytes(key)
        self._aead = AESGCM(self._key)

    @classmethod
    def generate(cls, kek_id: str) -> LocalKek:
        """A new random KEK."""
        return cls(kek_id, secrets.token_bytes(KEY_BYTES))

    @property
    def id(self) -> str:
        return self._id

    def wrap(self, dek: bytes, aad: bytes) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, dek, aad)

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes:
        try:
            return self._aead.decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], aad)
        except (InvalidTag, ValueError):
            raise DecryptionError(
                "the data key could not be unwrapped (wrong key, wrong context, or tampered)",
                kek_id=self._id,
            ) from None

    def __repr__(self) -> str:
        return f"LocalKek(id={self._id!r})"
