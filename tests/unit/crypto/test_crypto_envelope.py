"""Envelope encryption with an in-memory key ring: round trips, binding, tampering."""

from __future__ import annotations

import base64
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from valetkey.crypto import (
    DecryptionError,
    KeyRing,
    KeyRingError,
    LocalKek,
    MalformedCiphertext,
    UnknownKeyError,
)
from valetkey.errors import ValetkeyError

KEY = bytes(range(32))
RING = KeyRing([LocalKek("k1", KEY)], "k1")
AAD = b"connector:c_123:client_secret"
PLAINTEXT = b"the provider client secret"


def regions(blob: bytes) -> dict[str, slice]:
    """Byte ranges of each field, computed from the documented format."""
    n = blob[1]
    (m,) = struct.unpack_from(">H", blob, 2 + n)
    return {
        "magic": slice(0, 1),
        "id_length": slice(1, 2),
        "kek_id": slice(2, 2 + n),
        "wrapped_length": slice(2 + n, 4 + n),
        "wrapped_dek": slice(4 + n, 4 + n + m),
        "nonce": slice(4 + n + m, 16 + n + m),
        "ciphertext": slice(16 + n + m, len(blob) - 16),
        "tag": slice(len(blob) - 16, len(blob)),
    }


@settings(max_examples=200, deadline=None)
@given(plaintext=st.binary(max_size=4096), aad=st.binary(max_size=256))
def test_round_trip_any_bytes_and_aad(plaintext: bytes, aad: bytes) -> None:
    """decrypt(encrypt(p, aad), aad) == p for arbitrary bytes and aad."""
    assert RING.decrypt(RING.encrypt(plaintext, aad=aad), aad=aad) == plaintext


@settings(max_examples=100, deadline=None)
@given(aad=st.binary(max_size=64), other=st.binary(max_size=64))
def test_wrong_aad_fails(aad: bytes, other: bytes) -> None:
    """A blob does not open under any other aad (it is bound to its record)."""
    blob = RING.encrypt(PLAINTEXT, aad=aad)
    if other != aad:
        with pytest.raises(DecryptionError):
            RING.decrypt(blob, aad=other)


def test_blob_follows_the_documented_layout() -> None:
    """The blob starts with 0xE1, the KEK id, a 60-byte wrapped DEK, a nonce, then ct+tag."""
    blob = RING.encrypt(PLAINTEXT, aad=AAD)
    parts = regions(blob)
    assert blob[0] == 0xE1
    assert blob[parts["kek_id"]] == b"k1"
    assert len(blob[parts["wrapped_dek"]]) == 12 + 32 + 16
    assert len(blob[parts["ciphertext"]]) == len(PLAINTEXT)
    assert RING.kek_id_of(blob) == "k1"


@pytest.mark.parametrize(
    "region",
    ["magic", "id_length", "kek_id", "wrapped_length", "wrapped_dek", "nonce", "ciphertext", "tag"],
)
def test_tampering_any_region_fails(region: str) -> None:
    """Flipping a bit in any field of the blob makes decryption fail with a typed error."""
    blob = bytearray(RING.encrypt(PLAINTEXT, aad=AAD))
    part = regions(bytes(blob))[region]
    for index in (part.start, part.stop - 1):
        tampered = bytearray(blob)
        tampered[index] ^= 0x01
        with pytest.raises(DecryptionError) as info:
            RING.decrypt(bytes(tampered), aad=AAD)
        assert PLAINTEXT.decode() not in str(info.value)


def test_every_single_byte_flip_fails() -> None:
    """No single-byte change anywhere in a blob still decrypts."""
    blob = RING.encrypt(PLAINTEXT, aad=AAD)
    for index in range(len(blob)):
        tampered = bytearray(blob)
        tampered[index] ^= 0x80
        with pytest.raises(DecryptionError):
            RING.decrypt(bytes(tampered), aad=AAD)


@pytest.mark.parametrize("blob", [b"", b"\xe1", b"\xe1\x02k1", b"\x00" * 80, b"plaintext!"])
def test_garbage_and_truncation_are_malformed(blob: bytes) -> None:
    """Short or foreign input fails as malformed_ciphertext, not with IndexError."""
    with pytest.raises(MalformedCiphertext) as info:
        RING.decrypt(blob, aad=AAD)
    assert info.value.code == "malformed_ciphertext"


def test_truncated_blob_is_refused() -> None:
    """A blob cut anywhere fails with a DecryptionError."""
    blob = RING.encrypt(PLAINTEXT, aad=AAD)
    for cut in range(len(blob)):
        with pytest.raises(DecryptionError):
            RING.decrypt(blob[:cut], aad=AAD)


def test_unknown_kek_id_fails_cleanly() -> None:
    """A blob from another ring fails with unknown_kek, naming the id and nothing secret."""
    other = KeyRing([LocalKek.generate("elsewhere")], "elsewhere")
    blob = other.encrypt(PLAINTEXT, aad=AAD)
    with pytest.raises(UnknownKeyError) as info:
        RING.decrypt(blob, aad=AAD)
    err = info.value
    assert isinstance(err, ValetkeyError)
    assert err.code == "unknown_kek"
    assert "elsewhere" in err.message
    assert err.to_wire()["error"]["kek_id"] == "elsewhere"


def test_same_kek_id_different_key_fails() -> None:
    """A ring whose KEK has the same id but other bytes cannot unwrap the data key."""
    impostor = KeyRing([LocalKek.generate("k1")], "k1")
    with pytest.raises(DecryptionError) as info:
        impostor.decrypt(RING.encrypt(PLAINTEXT, aad=AAD), aad=AAD)
    assert info.value.code == "decryption_failed"


def test_two_encryptions_differ() -> None:
    """Encrypting the same plaintext twice gives different DEKs, nonces and ciphertexts."""
    first, second = RING.encrypt(PLAINTEXT, aad=AAD), RING.encrypt(PLAINTEXT, aad=AAD)
    assert first != second
    for region in ("wrapped_dek", "nonce", "ciphertext"):
        assert first[regions(first)[region]] != second[regions(second)[region]]


def test_text_and_json_conveniences_round_trip() -> None:
    """encrypt_text/decrypt_text and encrypt_json/decrypt_json round trip unicode and nesting."""
    assert RING.decrypt_text(RING.encrypt_text("héllo ✓", aad=AAD), aad=AAD) == "héllo ✓"
    value = {"refresh_token": "r-1", "scopes": ["a", "b"], "n": 3, "nested": {"ü": None}}
    assert RING.decrypt_json(RING.encrypt_json(value, aad=AAD), aad=AAD) == value


def test_decrypt_json_refuses_non_objects_and_text_refuses_non_utf8() -> None:
    """decrypt_json wants a JSON object and decrypt_text wants UTF-8, else DecryptionError."""
    with pytest.raises(DecryptionError):
        RING.decrypt_json(RING.encrypt(b"[1, 2]", aad=AAD), aad=AAD)
    with pytest.raises(DecryptionError):
        RING.decrypt_json(RING.encrypt(b"not json", aad=AAD), aad=AAD)
    with pytest.raises(DecryptionError):
        RING.decrypt_text(RING.encrypt(b"\xff\xfe", aad=AAD), aad=AAD)


def test_reprs_never_contain_key_bytes() -> None:
    """KeyRing and LocalKek reprs show ids only: no key in hex, base64 or base64url."""
    forms = [
        KEY.hex(),
        base64.b64encode(KEY).decode(),
        base64.urlsafe_b64encode(KEY).decode().rstrip("="),
        repr(KEY),
    ]
    shown = repr(RING) + repr(LocalKek("k1", KEY)) + str(RING)
    for form in forms:
        assert form not in shown
        assert form[:16] not in shown
    assert "k1" in repr(RING)


def test_in_memory_ring_refuses_rotation_and_retiring_the_active_key() -> None:
    """Without a key file, rotate is refused (the key would be lost); the active key stays."""
    ring = KeyRing([LocalKek.generate("a"), LocalKek.generate("b")], "a")
    with pytest.raises(KeyRingError):
        ring.rotate()
    with pytest.raises(KeyRingError):
        ring.retire(["a"])
    assert ring.retire(["b", "zzz"]) == ["b"]
    assert ring.kek_ids == ["a"]


def test_rewrap_moves_to_the_active_kek_and_keeps_the_ciphertext() -> None:
    """rewrap swaps KEK id and wrapped DEK for the active one; nonce and ciphertext are equal."""
    old, new = LocalKek.generate("old"), LocalKek.generate("new")
    blob = KeyRing([old], "old").encrypt(PLAINTEXT, aad=AAD)
    ring = KeyRing([old, new], "new")
    rewrapped = ring.rewrap(blob, aad=AAD)
    assert ring.kek_id_of(rewrapped) == "new"
    assert rewrapped[regions(rewrapped)["nonce"].start :] == blob[regions(blob)["nonce"].start :]
    assert KeyRing([new], "new").decrypt(rewrapped, aad=AAD) == PLAINTEXT
    assert ring.rewrap(rewrapped, aad=AAD) == rewrapped
    with pytest.raises(DecryptionError):
        ring.rewrap(blob, aad=b"other record")
