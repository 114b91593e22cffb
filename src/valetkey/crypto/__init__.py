"""Envelope encryption for records at rest: see :mod:`valetkey.crypto.keyring` for the format."""

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
