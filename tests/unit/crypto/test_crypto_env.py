"""KeyRing.from_env: a KEK from VALETKEY_KEK, with errors that never echo the value."""

from __future__ import annotations

import base64
import secrets

import pytest

from valetkey.crypto import InvalidKek, KeyRing, LocalKek

AAD = b"connector:c_1:api_key"


def b64url(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).decode().rstrip("=")


def test_plain_key_round_trips_and_gets_a_stable_id() -> None:
    """A bare base64url key works, padded or not, and its id is the same on every start."""
    key = secrets.token_bytes(32)
    ring = KeyRing.from_env(b64url(key))
    blob = ring.encrypt(b"v", aad=AAD)
    again = KeyRing.from_env(b64url(key) + "=")
    assert again.active_id == ring.active_id
    assert ring.active_id.startswith("env-")
    assert again.decrypt(blob, aad=AAD) == b"v"
    assert KeyRing([LocalKek(ring.active_id, key)], ring.active_id).decrypt(blob, aad=AAD) == b"v"


def test_named_keys_and_a_list_for_rotation() -> None:
    """`id:key,id2:key2` makes the first active and keeps the others for decryption."""
    old, new = secrets.token_bytes(32), secrets.token_bytes(32)
    blob = KeyRing.from_env(f"old:{b64url(old)}").encrypt(b"v", aad=AAD)
    ring = KeyRing.from_env(f"new:{b64url(new)}, old:{b64url(old)}")
    assert ring.active_id == "new"
    assert ring.kek_ids == ["new", "old"]
    assert ring.decrypt(blob, aad=AAD) == b"v"


BAD_VALUES = [
    b64url(secrets.token_bytes(16)),  # wrong length
    b64url(secrets.token_bytes(48)),
    base64.b64encode(b"\xfb" * 32).decode(),  # standard alphabet, '+' and '/'
    b64url(secrets.token_bytes(32))[:-1] + "!",
    "kek id:" + b64url(secrets.token_bytes(32)),  # space in the id
    "x" * 70 + ":" + b64url(secrets.token_bytes(32)),
    "",
    "hunter2-not-a-key-at-all",
]


@pytest.mark.parametrize("value", BAD_VALUES, ids=range(len(BAD_VALUES)))
def test_errors_are_clear_and_never_echo_the_value(value: str) -> None:
    """Each malformed VALETKEY_KEK is refused with invalid_kek and no part of it in the error."""
    with pytest.raises(InvalidKek) as info:
        KeyRing.from_env(value)
    err = info.value
    assert err.code == "invalid_kek"
    assert "VALETKEY_KEK" in err.message or "key id" in err.message
    shown = str(err) + repr(err) + repr(err.to_wire()) + str(err.__cause__ or "")
    secret_part = value.rpartition(":")[2]
    if secret_part:
        assert secret_part not in shown
        assert secret_part[:10] not in shown


def test_duplicate_ids_are_refused() -> None:
    """The same id twice in VALETKEY_KEK is an error, not a silent overwrite."""
    value = f"a:{b64url(secrets.token_bytes(32))},a:{b64url(secrets.token_bytes(32))}"
    with pytest.raises(InvalidKek):
        KeyRing.from_env(value)
