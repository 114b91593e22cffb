"""Broker access tokens: random, shown once, stored only as a SHA-256 hash.

``vk_at_`` tokens are workload credentials (app subjects, or their own user);
``vk_pt_`` tokens are members' management credentials.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets

__all__ = [
    "ACCESS_TOKEN_PREFIX",
    "MEMBER_TOKEN_PREFIX",
    "hash_token",
    "is_access_token",
    "is_member_token",
    "new_access_token",
    "new_member_token",
]

# Prefixes, not secrets: they let scanners and the verifier recognise the token kind.
ACCESS_TOKEN_PREFIX = "vk_at_"  # noqa: S105
MEMBER_TOKEN_PREFIX = "vk_pt_"  # noqa: S105
_RANDOM_BYTES = 32
_BODY = r"[A-Za-z0-9_-]{43}"  # 32 bytes, base64url without padding
_ACCESS = re.compile(rf"^{ACCESS_TOKEN_PREFIX}{_BODY}$")
_MEMBER = re.compile(rf"^{MEMBER_TOKEN_PREFIX}{_BODY}$")


def hash_token(token: str) -> str:
    """The stored form of a token: SHA-256, hex."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _new(prefix: str) -> tuple[str, str]:
    body = base64.urlsafe_b64encode(secrets.token_bytes(_RANDOM_BYTES)).rstrip(b"=").decode()
    token = prefix + body
    return token, hash_token(token)


def new_access_token() -> tuple[str, str]:
    """A new workload access token and its hash: ``(plaintext, sha256 hex)``. Show it once."""
    return _new(ACCESS_TOKEN_PREFIX)


def new_member_token() -> tuple[str, str]:
    """A new management (member) token and its hash: ``(plaintext, sha256 hex)``. Show it once."""
    return _new(MEMBER_TOKEN_PREFIX)


def is_access_token(token: str) -> bool:
    """True when ``token`` has the exact shape of a ``vk_at_`` token."""
    return bool(_ACCESS.match(token))


def is_member_token(token: str) -> bool:
    """True when ``token`` has the exact shape of a ``vk_pt_`` token."""
    return bool(_MEMBER.match(token))
