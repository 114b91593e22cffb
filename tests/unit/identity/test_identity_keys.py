"""The broker's signing-key file: created 0600 and atomically, reloaded, rotated."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from valetkey.crypto.errors import InsecureKeyFile, KeyFileError
from valetkey.identity.keys import SigningKeys


def test_load_or_create_writes_a_private_file(tmp_path: Path) -> None:
    """A new key file is mode 0600 and holds one ES256 key whose kid is its thumbprint."""
    path = tmp_path / "keys" / "signing.json"
    keys = SigningKeys.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert keys.current.kid == keys.current.thumbprint()
    assert keys.current.get("crv") == "P-256"
    assert [p.name for p in path.parent.iterdir()] == ["signing.json"]  # no temp file left


def test_load_or_create_reloads_the_same_key(tmp_path: Path) -> None:
    """A second call loads the existing file instead of replacing it."""
    path = tmp_path / "signing.json"
    first = SigningKeys.load_or_create(path)
    again = SigningKeys.load_or_create(path)
    assert again.kids == first.kids


def test_a_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    """A key file with group or other permissions is refused as key_file_insecure."""
    path = tmp_path / "signing.json"
    SigningKeys.load_or_create(path)
    os.chmod(path, 0o644)
    with pytest.raises(InsecureKeyFile) as info:
        SigningKeys.load_or_create(path)
    assert info.value.code == "key_file_insecure"
    assert info.value.details == {"path": str(path)}


def test_a_corrupt_file_is_refused(tmp_path: Path) -> None:
    """A key file that is not the expected JSON is refused as key_file_invalid, not replaced."""
    path = tmp_path / "signing.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, b"{not json")
    os.close(fd)
    with pytest.raises(KeyFileError) as info:
        SigningKeys.load_or_create(path)
    assert info.value.code == "key_file_invalid"
    assert not isinstance(info.value, InsecureKeyFile)
    assert path.read_bytes() == b"{not json"


def test_rotation_keeps_previous_keys_for_verification(tmp_path: Path) -> None:
    """rotate() makes a new current key, keeps the old one, and rewrites the file 0600."""
    path = tmp_path / "signing.json"
    old = SigningKeys.load_or_create(path)
    new = old.rotate(path)
    assert new.current.kid != old.current.kid
    assert new.kids[1:] == old.kids
    assert SigningKeys.load_or_create(path).kids == new.kids
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(new.rotate(keep_previous=1).kids) == 2


def test_public_documents_hold_no_private_material(tmp_path: Path) -> None:
    """The JWKS and the repr hold no private key member."""
    keys = SigningKeys.load_or_create(tmp_path / "signing.json")
    private_d = json.loads((tmp_path / "signing.json").read_text())["keys"][0]["d"]
    assert all("d" not in k for k in keys.public_jwks()["keys"])
    assert private_d not in json.dumps(keys.public_jwks())
    assert private_d not in repr(keys)
    assert all(not k.is_private for k in keys.verification_keys())
