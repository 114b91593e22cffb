"""Envelope encryption for records at rest: see :mod:`valetkey.crypto.keyring` for the format.

The errors load now (they import only the standard library, so the SDK can map their codes);
the key ring and keys, which need ``cryptography``, on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from valetkey._lazy import lazy_attributes
from valetkey.crypto.errors import (
    CryptoError,
    DecryptionError,
    InsecureKeyFile,
    InvalidKek,
    KeyFileError,
    KeyRingError,
    MalformedCiphertext,
    UnknownKeyError,
)

if TYPE_CHECKING:
    from valetkey.crypto.kek import KeyEncryptionKey, LocalKek
    from valetkey.crypto.keyring import KeyRing
    from valetkey.crypto.secret import Secret

__all__ = [
    "CryptoError",
    "DecryptionError",
    "InsecureKeyFile",
    "InvalidKek",
    "KeyEncryptionKey",
    "KeyFileError",
    "KeyRing",
    "KeyRingError",
    "LocalKek",
    "MalformedCiphertext",
    "Secret",
    "UnknownKeyError",
]

_LAZY = {
    "KeyEncryptionKey": "valetkey.crypto.kek",
    "LocalKek": "valetkey.crypto.kek",
    "KeyRing": "valetkey.crypto.keyring",
    "Secret": "valetkey.crypto.secret",
}


__getattr__, __dir__ = lazy_attributes(globals(), _LAZY)
