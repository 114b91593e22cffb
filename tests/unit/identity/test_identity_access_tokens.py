"""Access tokens: random, prefixed, and stored only as a SHA-256 hash."""

from __future__ import annotations

import hashlib

from valetkey.identity.access_tokens import (
    hash_token,
    is_access_token,
    is_member_token,
    new_access_token,
    new_member_token,
)


def test_access_token_shape_and_hash() -> None:
    """An access token is vk_at_ + 43 base64url characters; its hash is its SHA-256 hex."""
    token, digest = new_access_token()
    assert token.startswith("vk_at_")
    assert len(token) == 6 + 43
    assert digest == hashlib.sha256(token.encode()).hexdigest() == hash_token(token)
    assert is_access_token(token)
    assert not is_member_token(token)


def test_member_token_shape() -> None:
    """A member token has the vk_pt_ prefix and is not an access token."""
    token, digest = new_member_token()
    assert token.startswith("vk_pt_")
    assert is_member_token(token)
    assert not is_access_token(token)
    assert digest == hash_token(token)


def test_tokens_are_unique() -> None:
    """Two new tokens never coincide (256 random bits each)."""
    assert len({new_access_token()[0] for _ in range(100)}) == 100


def test_malformed_tokens_are_not_access_tokens() -> None:
    """Wrong length or characters are not recognised as access tokens."""
    assert not is_access_token("vk_at_short")
    assert not is_access_token("vk_at_" + "!" * 43)
    assert not is_access_token("vk_at_" + "a" * 44)
