"""The broker's own signing keys: ES256 (P-256), ``kid`` = RFC 7638 thumbprint.

The keys live in one JSON file, mode 0600, the current key first and the
previous ones after it, so tokens signed before a rotation still verify. The
file is created atomically: written to a private temporary file, then linked
into place with ``os.link`` (which fails if another process won the race).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import stat
from pathlib import Path
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet

from valetkey.crypto.errors import InsecureKeyFile, KeyFileError

__all__ = ["SIGNING_ALGORITHM", "SigningKeys"]

SIGNING_ALGORITHM = "ES256"
_FORMAT_VERSION = 1


def _new_key() -> ECKey:
    key = ECKey.generate_key("P-256", parameters={"alg": SIGNING_ALGORITHM, "use": "sig"})
    key.ensure_kid()  # RFC 7638 thumbprint
    return key


class SigningKeys:
    """The current signing key and the previous keys still accepted for verification."""

    def __init__(self, keys: list[ECKey]) -> None:
        if not keys:
            raise ValueError("at least one signing key is needed")
        for key in keys:
            if not key.is_private:
                raise ValueError("signing keys must be private keys")
            key.ensure_kid()
        self._keys = tuple(keys)
        self._public = KeySet([ECKey.import_key(k.as_dict(private=False)) for k in self._keys])

    def __repr__(self) -> str:
        return f"SigningKeys(kids={[k.kid for k in self._keys]!r})"

    @classmethod
    def generate(cls) -> SigningKeys:
        """A fresh in-memory key (tests, ephemeral brokers)."""
        return cls([_new_key()])

    @classmethod
    def load_or_create(cls, path: Path) -> SigningKeys:
        """Load the keys at ``path``, or create a new key file (0600) if there is none."""
        if path.exists():
            return cls._load(path)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        created = cls([_new_key()])
        try:
            _write_new(path, created._serialize())
        except FileExistsError:
            return cls._load(path)  # another process created it first: use theirs
        return created

    @classmethod
    def _load(cls, path: Path) -> SigningKeys:
        try:
            info = path.stat()
        except OSError as exc:
            raise KeyFileError(f"cannot read the signing-key file {path}", path=str(path)) from exc
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise InsecureKeyFile(
                f"the signing-key file {path} is accessible to other users "
                f"(mode {stat.S_IMODE(info.st_mode):o}); it must be 0600",
                path=str(path),
            )
        try:
            data = json.loads(path.read_text("utf-8"))
            keys = [ECKey.import_key(item) for item in data["keys"]]
        except (OSError, ValueError, KeyError, TypeError, JoseError) as exc:
            msg = f"the signing-key file {path} is unreadable or corrupt"
            raise KeyFileError(msg, path=str(path)) from exc
        return cls(keys)

    def _serialize(self) -> bytes:
        body: dict[str, Any] = {
            "version": _FORMAT_VERSION,
            "keys": [dict(k.as_dict(private=True)) for k in self._keys],
        }
        return json.dumps(body, indent=2).encode("utf-8")

    def rotate(self, path: Path | None = None, *, keep_previous: int = 2) -> SigningKeys:
        """A new current key, keeping up to ``keep_previous`` older keys for verification.

        When ``path`` is given the new set replaces the file atomically.
        """
        rotated = SigningKeys([_new_key(), *self._keys[: max(keep_previous, 0)]])
        if path is not None:
            _replace(path, rotated._serialize())
        return rotated

    @property
    def current(self) -> ECKey:
        """The key new tokens are signed with."""
        return self._keys[0]

    @property
    def kids(self) -> tuple[str, ...]:
        return tuple(str(k.kid) for k in self._keys)

    def verification_keys(self) -> KeySet:
        """Public halves of every key still accepted (current and previous)."""
        return self._public

    def public_jwks(self) -> dict[str, Any]:
        """The JWKS document: public keys only."""
        return {"keys": [dict(k.as_dict(private=False)) for k in self._keys]}


def _write_private_temp(path: Path, content: bytes) -> Path:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)
    return tmp


def _write_new(path: Path, content: bytes) -> None:
    tmp = _write_private_temp(path, content)
    try:
        os.link(tmp, path)  # atomic, and fails if the file appeared meanwhile
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _replace(path: Path, content: bytes) -> None:
    tmp = _write_private_temp(path, content)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
