"""The key file: JSON, mode 0600 in a 0700 directory, replaced atomically, locked while rewritten.

``{"format": "valetkey-keyring", "version": 1, "active": ID,
"keys": [{"id": ID, "key": BASE64URL_32_BYTES}, ...]}`` (generated ids carry their date).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import hashlib
import json
import os
import secrets
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from valetkey.crypto.errors import InsecureKeyFile, InvalidKek, KeyFileError
from valetkey.crypto.kek import KeyEncryptionKey, LocalKek

FORMAT = "valetkey-keyring"


def b64(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def fingerprint(key: bytes) -> str:
    """A short public name for a key (a one-way hash; reveals nothing usable about the key)."""
    return hashlib.sha256(b"valetkey kek id\0" + key).hexdigest()[:8]


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``PATH.lock`` (other processes rewriting the same file wait)."""
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def read(path: Path) -> tuple[str, dict[str, LocalKek]]:
    """Load ``(active_id, {id: kek})``; refuse a file readable by group or other."""
    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            if mode & 0o077:
                raise InsecureKeyFile(
                    f"key file {path} has mode {mode & 0o777:o}: other users can read it; "
                    f"fix it with: chmod 600 {path}",
                    path=str(path),
                )
            raw = f.read()
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}", path=str(path)) from exc
    try:
        doc = json.loads(raw)
        if doc.get("format") != FORMAT or doc.get("version") != 1:
            raise ValueError
        keys = {e["id"]: LocalKek(e["id"], unb64(e["key"])) for e in doc["keys"]}
        active = doc["active"]
        if active not in keys:
            raise ValueError
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error, InvalidKek):
        msg = f"key file {path} is not a valid Valetkey key file"
        raise KeyFileError(msg, path=str(path)) from None
    return active, keys


def write(path: Path, active: str, keys: Mapping[str, KeyEncryptionKey]) -> None:
    """Write the key file atomically: a new 0600 file (O_EXCL), fsync, then ``os.replace``."""
    entries = []
    for kid, kek in keys.items():
        if not isinstance(kek, LocalKek):
            raise KeyFileError("only local keys can be saved in a key file")
        entries.append({"id": kid, "key": b64(kek._key)})
    doc: dict[str, Any] = {"format": FORMAT, "version": 1, "active": active, "keys": entries}
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(json.dumps(doc, indent=2).encode() + b"\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
