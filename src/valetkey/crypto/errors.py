"""Errors of the crypto layer. Messages name paths and key ids, never key material or plaintext."""

from __future__ import annotations

from valetkey.errors import ValetkeyError


class CryptoError(ValetkeyError):
    """The key ring or the envelope encryption failed."""

    code = "crypto_error"
    status = 500


class DecryptionError(CryptoError):
    """A record could not be decrypted: wrong key, wrong context, or tampered data."""

    code = "decryption_failed"


class UnknownKeyError(DecryptionError):
    """The record was encrypted with a key-encryption key this key ring does not hold."""

    code = "unknown_kek"
    remedy = "Restore the retired key into the key file, or re-create the record."


class MalformedCiphertext(DecryptionError):
    """The data is not a Valetkey envelope, or is truncated."""

    code = "malformed_ciphertext"


class InvalidKek(CryptoError):
    """A key-encryption key is malformed (wrong length, encoding or id)."""

    code = "invalid_kek"
    remedy = "Generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"


class KeyFileError(CryptoError):
    """A key file (the key-encryption keys, the signing keys) cannot be read, parsed or written."""

    code = "key_file_invalid"


class InsecureKeyFile(KeyFileError):
    """A key file (the key-encryption keys, the signing keys) can be read by other users."""

    code = "key_file_insecure"
    remedy = "chmod 600 the key file, owned by the broker's user."


class KeyRingError(CryptoError):
    """The key ring refused the operation (e.g. retiring the active key)."""

    code = "key_ring_error"
