"""Envelope encryption (DESIGN §6): a random data key per record, wrapped by a key-encryption key.

Each record gets a fresh 32-byte data key (DEK); the plaintext is sealed with AES-256-GCM under
it, and the DEK is wrapped by the key ring's active KEK. Both are bound to the caller's ``aad``
(say ``b"connector:<id>:client_secret"``), so a blob moved to another record does not decrypt.

Blob format, version 1 (all lengths big-endian)::

    offset        size  field
    0             1     0xE1: magic (0xE_) and format version (0x_1)
    1             1     n: length of the KEK id (1..64)
    2             n     KEK id, ASCII
    2+n           2     m: length of the wrapped DEK
    4+n           m     wrapped DEK (LocalKek: nonce(12) || encrypted DEK(32) || tag(16))
    4+n+m         12    nonce of the record
    16+n+m        rest  AES-256-GCM ciphertext of the plaintext, with its 16-byte tag

The record is sealed with AAD ``b"valetkey/v1/data\\0" + aad`` and the DEK is wrapped with
``b"valetkey/v1/dek\\0" + aad``. The header is not bound to the record, on purpose: ``rewrap``
swaps the KEK id and wrapped DEK for the active KEK's without touching the ciphertext. A forged
header fails anyway, since the DEK it yields must open the record's GCM tag.

Rotation without downtime: ``rotate()`` (new active KEK, old ones kept) → ``rewrap`` every
record whose ``kek_id_of`` is not ``active_id`` → ``retire`` the old ids. Another process on
the same key file keeps working: it reloads the file once when it meets an unknown KEK id.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from valetkey.core.clock import Clock, SystemClock
from valetkey.crypto import keyfile
from valetkey.crypto.errors import (
    DecryptionError,
    InvalidKek,
    KeyRingError,
    MalformedCiphertext,
    UnknownKeyError,
)
from valetkey.crypto.kek import KEY_BYTES, NONCE_BYTES, KeyEncryptionKey, LocalKek, check_kek_id
from valetkey.crypto.secret import Secret

MAGIC = 0xE1
_DATA_AAD = b"valetkey/v1/data\0"
_DEK_AAD = b"valetkey/v1/dek\0"
_Keys = dict[str, KeyEncryptionKey]
_ENV_KEY = re.compile(r"^[A-Za-z0-9_-]{43}=?$")


@dataclass(frozen=True, slots=True)
class _Envelope:
    kek_id: str
    wrapped: bytes
    nonce: bytes
    ciphertext: bytes

    @classmethod
    def parse(cls, blob: bytes) -> _Envelope:
        try:
            if blob[0] != MAGIC:
                raise MalformedCiphertext("not a Valetkey envelope (unknown magic or version)")
            n = blob[1]
            kek_id = blob[2 : 2 + n].decode("ascii")
            (m,) = struct.unpack_from(">H", blob, 2 + n)
            wrapped, rest = blob[4 + n : 4 + n + m], blob[4 + n + m :]
            if len(wrapped) != m or len(rest) < NONCE_BYTES + 16:
                raise MalformedCiphertext("the envelope is truncated")
            check_kek_id(kek_id)
        except (IndexError, UnicodeDecodeError, struct.error, InvalidKek):
            raise MalformedCiphertext("the envelope header is invalid") from None
        return cls(kek_id, wrapped, rest[:NONCE_BYTES], rest[NONCE_BYTES:])

    def pack(self) -> bytes:
        kid = self.kek_id.encode("ascii")
        head = bytes([MAGIC, len(kid)]) + kid + struct.pack(">H", len(self.wrapped))
        return head + self.wrapped + self.nonce + self.ciphertext


def _new_id(clock: Clock) -> str:
    return f"kek-{clock.now():%Y%m%d}-{secrets.token_hex(4)}"


class KeyRing:
    """Several KEKs, one active: encrypts with the active one, decrypts with any of them.

    ``path`` is the key file the keys came from (``load_or_create`` sets it); a ring without
    one (``from_env``, a KMS) cannot ``rotate``. Safe to share between threads and tasks.
    """

    def __init__(
        self,
        keks: Iterable[KeyEncryptionKey],
        active_id: str,
        *,
        path: Path | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._keks: _Keys = {kek.id: kek for kek in keks}
        if active_id not in self._keks:
            raise KeyRingError(f"the active key {active_id!r} is not in the key ring")
        self._active = active_id
        self._path = path
        self._clock = clock or SystemClock()
        self._lock = threading.RLock()
        self._file_seen = self._file_signature()
        self._file_checked = time.monotonic()

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def load_or_create(cls, path: Path, *, clock: Clock | None = None) -> KeyRing:
        """Load the key file at ``path``, or create it (0600, parent 0700) with one new KEK."""
        path, clock = Path(path), clock or SystemClock()
        if not os.path.lexists(path):
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with keyfile.locked(path):
                if not os.path.lexists(path):
                    kek = LocalKek.generate(_new_id(clock))
                    keyfile.write(path, kek.id, {kek.id: kek})
        active, keys = keyfile.read(path)
        return cls(keys.values(), active, path=path, clock=clock)

    @classmethod
    def from_env(cls, value: str) -> KeyRing:
        """Build a ring from ``VALETKEY_KEK``: ``[id:]base64url(32 bytes)``, comma-separated;
        the first is active, the others only decrypt (rotation through the environment)."""
        keks: list[LocalKek] = []
        for index, item in enumerate(value.strip().split(",")):
            kek_id, sep, encoded = item.strip().rpartition(":")
            where = f"VALETKEY_KEK entry {index + 1}"
            if not _ENV_KEY.match(encoded):
                raise InvalidKek(
                    f"{where} is not the base64url encoding of {KEY_BYTES} bytes "
                    f"(expected 43 characters of A-Z a-z 0-9 - _, optionally prefixed by 'id:')"
                )
            key = keyfile.unb64(encoded.rstrip("="))
            if not sep:
                kek_id = "env-" + keyfile.fingerprint(key)
            try:
                keks.append(LocalKek(check_kek_id(kek_id), key))
            except InvalidKek as exc:
                raise InvalidKek(f"{where}: {exc.message}") from None
        if len({k.id for k in keks}) != len(keks):
            raise InvalidKek("VALETKEY_KEK names the same key id twice")
        return cls(keks, keks[0].id)

    # -- key management -------------------------------------------------------------------
    @property
    def active_id(self) -> str:
        return self._active

    @property
    def kek_ids(self) -> list[str]:
        with self._lock:
            return list(self._keks)

    def reload(self) -> None:
        """Re-read the key file (picks up another process's rotation or retirement)."""
        if self._path is not None:
            signature = self._file_signature()
            active, keys = keyfile.read(self._path)
            with self._lock:
                self._keks, self._active = dict(keys), active
                self._file_seen = signature

    #: How often ``encrypt`` looks at the key file for a rotation made by another process.
    RELOAD_CHECK_SECONDS = 1.0

    def _file_signature(self) -> tuple[int, int, int] | None:
        if self._path is None:
            return None
        try:
            st = os.stat(self._path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _follow_rotation(self) -> None:
        """Reload when the key file changed (checked at most once per RELOAD_CHECK_SECONDS), so a
        process never keeps encrypting with a key that ``valetkey keys rotate`` is about to retire."""
        if self._path is None:
            return
        now = time.monotonic()
        if now - self._file_checked < self.RELOAD_CHECK_SECONDS:
            return
        self._file_checked = now
        if self._file_signature() != self._file_seen:
            self.reload()

    def rotate(self) -> str:
        """Make a new KEK active, keep the old ones for decryption, persist; return its id."""
        if self._path is None:
            raise KeyRingError("only a key ring backed by a key file can rotate its keys")
        kek = LocalKek.generate(_new_id(self._clock))
        self._update(lambda keys, _: ({**keys, kek.id: kek}, kek.id))
        return kek.id

    def retire(self, kek_ids: Iterable[str]) -> list[str]:
        """Drop KEKs no longer used by any record; refuse the active one. Return those dropped."""
        wanted, dropped = set(kek_ids), list[str]()

        def drop(keys: _Keys, active: str) -> tuple[_Keys, str]:
            if active in wanted:
                raise KeyRingError("the active key cannot be retired; rotate first")
            dropped.extend(kid for kid in keys if kid in wanted)
            return {k: v for k, v in keys.items() if k not in wanted}, active

        self._update(drop)
        return dropped

    def _update(self, change: Callable[[_Keys, str], tuple[_Keys, str]]) -> None:
        """Apply ``change`` to the keys; for a file ring, to the file's latest state, under lock."""
        with self._lock, keyfile.locked(self._path) if self._path else contextlib.nullcontext():
            self.reload()
            keys, active = change(dict(self._keks), self._active)
            if self._path is not None:
                keyfile.write(self._path, active, keys)
            self._keks, self._active = keys, active

    # -- encryption -----------------------------------------------------------------------
    def encrypt(self, plaintext: bytes, *, aad: bytes) -> bytes:
        """Seal ``plaintext`` under a fresh data key, bound to ``aad``."""
        self._follow_rotation()
        with self._lock:
            kek = self._keks[self._active]
        dek = AESGCM.generate_key(bit_length=256)
        nonce = secrets.token_bytes(NONCE_BYTES)
        ciphertext = AESGCM(dek).encrypt(nonce, plaintext, _DATA_AAD + aad)
        return _Envelope(kek.id, kek.wrap(dek, _DEK_AAD + aad), nonce, ciphertext).pack()

    def decrypt(self, blob: bytes, *, aad: bytes) -> bytes:
        """Open a blob made by :meth:`encrypt` with the same ``aad``."""
        env = _Envelope.parse(blob)
        dek = self._kek_for(env.kek_id).unwrap(env.wrapped, _DEK_AAD + aad)
        try:
            return AESGCM(dek).decrypt(env.nonce, env.ciphertext, _DATA_AAD + aad)
        except (InvalidTag, ValueError):
            raise DecryptionError(
                "the record could not be decrypted (wrong context, or tampered)",
                kek_id=env.kek_id,
            ) from None

    def kek_id_of(self, blob: bytes) -> str:
        """The id of the KEK that wraps this blob's data key."""
        return _Envelope.parse(blob).kek_id

    def rewrap(self, blob: bytes, *, aad: bytes) -> bytes:
        """Re-wrap the blob's data key with the active KEK; the record's ciphertext is unchanged."""
        env = _Envelope.parse(blob)
        with self._lock:
            active = self._keks[self._active]
        if env.kek_id == active.id:
            return blob
        dek = self._kek_for(env.kek_id).unwrap(env.wrapped, _DEK_AAD + aad)
        wrapped = active.wrap(dek, _DEK_AAD + aad)
        return _Envelope(active.id, wrapped, env.nonce, env.ciphertext).pack()

    def encrypt_text(self, text: str | Secret, *, aad: bytes) -> bytes:
        value = text.reveal() if isinstance(text, Secret) else text
        return self.encrypt(value.encode("utf-8"), aad=aad)

    def decrypt_text(self, blob: bytes, *, aad: bytes) -> str:
        try:
            return self.decrypt(blob, aad=aad).decode("utf-8")
        except UnicodeDecodeError:
            raise DecryptionError("the record is not UTF-8 text") from None

    def encrypt_json(self, value: dict[str, Any], *, aad: bytes) -> bytes:
        data = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        return self.encrypt(data.encode("utf-8"), aad=aad)

    def decrypt_json(self, blob: bytes, *, aad: bytes) -> dict[str, Any]:
        try:
            value = json.loads(self.decrypt(blob, aad=aad))
        except ValueError:
            raise DecryptionError("the record is not JSON") from None
        if not isinstance(value, dict):
            raise DecryptionError("the record is not a JSON object")
        return value

    # -- internals ------------------------------------------------------------------------
    def _kek_for(self, kek_id: str) -> KeyEncryptionKey:
        with self._lock:
            kek = self._keks.get(kek_id)
        if kek is None and self._path is not None:
            self.reload()  # another process may have rotated
            with self._lock:
                kek = self._keks.get(kek_id)
        if kek is None:
            raise UnknownKeyError(
                f"the record's key-encryption key {kek_id!r} is not in the key ring", kek_id=kek_id
            )
        return kek

    def __repr__(self) -> str:
        where = f", path={str(self._path)!r}" if self._path else ""
        return f"KeyRing(active={self._active!r}, keys={self.kek_ids!r}{where})"
