"""File-backed key rings: modes, refusal of loose permissions, rotation across processes."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from valetkey.crypto import (
    InsecureKeyFile,
    KeyFileError,
    KeyRing,
    KeyRingError,
    UnknownKeyError,
)

AAD = b"grant:g_1:refresh_token"
PLAINTEXT = b"refresh-token-value"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "keys" / "kek.json"


def test_created_file_is_0600_in_a_0700_directory(key_path: Path) -> None:
    """load_or_create makes the directory 0700 and the key file 0600, with one active key."""
    ring = KeyRing.load_or_create(key_path)
    assert mode(key_path) == 0o600
    assert mode(key_path.parent) == 0o700
    assert ring.kek_ids == [ring.active_id]
    doc = json.loads(key_path.read_text())
    assert doc["active"] == ring.active_id
    assert [entry["id"] for entry in doc["keys"]] == [ring.active_id]


def test_reloading_the_file_gives_the_same_keys(key_path: Path) -> None:
    """A second load of the same file decrypts what the first encrypted."""
    blob = KeyRing.load_or_create(key_path).encrypt(PLAINTEXT, aad=AAD)
    assert KeyRing.load_or_create(key_path).decrypt(blob, aad=AAD) == PLAINTEXT


@pytest.mark.parametrize("loose", [0o640, 0o604, 0o644, 0o660])
def test_group_or_other_readable_file_is_refused(key_path: Path, loose: int) -> None:
    """A key file readable by group or other is refused, naming the path and `chmod 600`."""
    KeyRing.load_or_create(key_path)
    key_path.chmod(loose)
    with pytest.raises(InsecureKeyFile) as info:
        KeyRing.load_or_create(key_path)
    assert str(key_path) in info.value.message
    assert f"chmod 600 {key_path}" in info.value.message
    assert info.value.code == "key_file_insecure"


def test_corrupt_key_file_is_refused_without_echoing_it(key_path: Path) -> None:
    """A key file that is not a Valetkey key file fails with key_file_invalid, content unshown."""
    key_path.parent.mkdir(parents=True, mode=0o700)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(
        fd, b'{"format": "valetkey-keyring", "version": 1, "keys": [{"id": "a", "key": "c2Vj"}]}'
    )
    os.close(fd)
    with pytest.raises(KeyFileError) as info:
        KeyRing.load_or_create(key_path)
    assert info.value.code == "key_file_invalid"
    assert "c2Vj" not in str(info.value)


def test_rotate_rewrap_retire_keeps_records_readable(key_path: Path) -> None:
    """After rotate, rewrap of each record, and retiring the old KEK, every record decrypts."""
    ring = KeyRing.load_or_create(key_path)
    old_id = ring.active_id
    blobs = [ring.encrypt(b"record %d" % i, aad=AAD + b"%d" % i) for i in range(5)]
    new_id = ring.rotate()
    assert new_id != old_id
    assert ring.active_id == new_id
    assert ring.decrypt(blobs[0], aad=AAD + b"0") == b"record 0"  # old key kept
    assert ring.kek_id_of(ring.encrypt(PLAINTEXT, aad=AAD)) == new_id
    moved = [ring.rewrap(blob, aad=AAD + b"%d" % i) for i, blob in enumerate(blobs)]
    assert {ring.kek_id_of(blob) for blob in moved} == {new_id}
    assert ring.retire([old_id]) == [old_id]
    assert ring.kek_ids == [new_id]
    fresh = KeyRing.load_or_create(key_path)
    for i, blob in enumerate(moved):
        assert fresh.decrypt(blob, aad=AAD + b"%d" % i) == b"record %d" % i
    with pytest.raises(UnknownKeyError):
        fresh.decrypt(blobs[0], aad=AAD + b"0")


def test_rotation_keeps_mode_and_leaves_no_temp_files(key_path: Path) -> None:
    """The rewritten key file is still 0600 and the directory holds no temporary files."""
    ring = KeyRing.load_or_create(key_path)
    ring.rotate()
    ring.rotate()
    assert mode(key_path) == 0o600
    assert sorted(p.name for p in key_path.parent.iterdir()) == ["kek.json", "kek.json.lock"]
    assert len(KeyRing.load_or_create(key_path).kek_ids) == 3


def test_another_instance_picks_up_a_rotation_on_decrypt(key_path: Path) -> None:
    """A ring on the same file reloads once when it meets an unknown KEK id, then decrypts."""
    first = KeyRing.load_or_create(key_path)
    second = KeyRing.load_or_create(key_path)
    new_id = first.rotate()
    blob = first.encrypt(PLAINTEXT, aad=AAD)
    assert new_id not in second.kek_ids
    assert second.decrypt(blob, aad=AAD) == PLAINTEXT
    assert second.active_id == new_id


def test_rotations_from_two_stale_instances_lose_no_key(key_path: Path) -> None:
    """Two instances rotating in turn both keep each other's new keys (read-modify-write)."""
    first = KeyRing.load_or_create(key_path)
    second = KeyRing.load_or_create(key_path)
    a = first.rotate()
    blob = first.encrypt(PLAINTEXT, aad=AAD)
    b = second.rotate()  # second never saw `a` before rotating
    final = KeyRing.load_or_create(key_path)
    assert {a, b} <= set(final.kek_ids)
    assert final.active_id == b
    assert final.decrypt(blob, aad=AAD) == PLAINTEXT


def test_retire_refuses_the_active_key_and_keeps_the_file(key_path: Path) -> None:
    """Retiring the active KEK is refused and the key file is unchanged."""
    ring = KeyRing.load_or_create(key_path)
    before = key_path.read_bytes()
    with pytest.raises(KeyRingError):
        ring.retire([ring.active_id])
    assert key_path.read_bytes() == before


def test_key_file_keys_never_appear_in_repr(key_path: Path) -> None:
    """The ring's repr names the path and ids but none of the key strings from the file."""
    ring = KeyRing.load_or_create(key_path)
    ring.rotate()
    for entry in json.loads(key_path.read_text())["keys"]:
        assert entry["key"] not in repr(ring)
        assert entry["key"][:12] not in repr(ring)
    assert str(key_path) in repr(ring)
