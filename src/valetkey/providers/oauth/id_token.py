"""OpenID Connect ID tokens returned by a provider: verified before anything is read from them.

OpenID Connect Core 1.0 §3.1.3.7: the signature by a key from the issuer's ``jwks_uri``
with an algorithm the issuer announces (asymmetric only; RS256 when it does not say),
``iss`` exactly the configured issuer, ``aud`` exactly the client id (a single audience),
``exp``/``iat`` present and current, ``sub`` present, and ``nonce`` equal to the one sent
with the authorization request. The checks themselves are the identity layer's
(:mod:`valetkey.identity.jwt`); here they are wrapped as provider errors.

Keys are cached per ``jwks_uri`` for a time-to-live, and refetched at most once a minute
when a token names an unknown ``kid``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx2
from joserfc.errors import JoseError
from joserfc.jwk import JWKRegistry, Key, KeySet, RSAKey

from valetkey.core.clock import Clock
from valetkey.errors import IdentityError, ProviderError
from valetkey.identity.errors import UnknownKey
from valetkey.identity.jwt import ASYMMETRIC_ALGORITHMS, IssuerPolicy, verify_jwt
from valetkey.providers.oauth.discovery import fetch_json

__all__ = ["ID_TOKEN_MAX_LIFETIME_SECONDS", "JwksStore", "verify_id_token"]

#: Longest ID token lifetime (exp - iat) accepted.
ID_TOKEN_MAX_LIFETIME_SECONDS = 24 * 3600
_KEY_TTL_SECONDS = 3600.0
_REFETCH_COOLDOWN_SECONDS = 60.0
_MAX_KEYS = 100


@dataclass(slots=True)
class _Keys:
    keys: KeySet
    fetched_at: float


class JwksStore:
    """Provider signing keys by ``jwks_uri``; fetched on demand, cached, refetched on a new kid."""

    def __init__(self) -> None:
        self._entries: dict[str, _Keys] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def keys(
        self, http: httpx2.AsyncClient, clock: Clock, jwks_uri: str, *, refetch: bool = False
    ) -> KeySet:
        """The keys at ``jwks_uri``; ``refetch`` asks for a fresh copy (at most once a minute)."""
        async with self._locks.setdefault(jwks_uri, asyncio.Lock()):
            entry = self._entries.get(jwks_uri)
            now = clock.timestamp()
            if entry is not None:
                age = now - entry.fetched_at
                if (not refetch and age < _KEY_TTL_SECONDS) or (
                    refetch and age < _REFETCH_COOLDOWN_SECONDS
                ):
                    return entry.keys
            status, document = await fetch_json(http, jwks_uri, "JWKS")
            if status != 200 or document is None:
                raise ProviderError(
                    f"the provider's JWKS at {jwks_uri} answered HTTP {status} without a key set",
                    error="invalid_jwks",
                )
            keys = _parse_jwks(document, jwks_uri)
            self._entries[jwks_uri] = _Keys(keys, now)
            return keys


def _parse_jwks(document: Mapping[str, Any], jwks_uri: str) -> KeySet:
    items = document.get("keys")
    if not isinstance(items, list):
        raise ProviderError(f"the JWKS at {jwks_uri} has no key list", error="invalid_jwks")
    keys: list[Key] = []
    for item in items[:_MAX_KEYS]:
        # Public signing keys only: never a symmetric key, never an encryption key.
        if not isinstance(item, dict) or item.get("kty") not in ("RSA", "EC", "OKP"):
            continue
        if item.get("use") not in (None, "sig") or "d" in item:
            continue
        if item.get("kid") is not None and not isinstance(item.get("kid"), str):
            continue
        try:
            key = JWKRegistry.import_key(item)
        except (JoseError, ValueError, TypeError):
            continue
        if isinstance(key, RSAKey) and key.public_key.key_size < 2048:
            continue
        keys.append(key)
    if not keys:
        raise ProviderError(
            f"the JWKS at {jwks_uri} has no usable signing key", error="invalid_jwks"
        )
    return KeySet(keys)


async def verify_id_token(
    token: str,
    *,
    http: httpx2.AsyncClient,
    clock: Clock,
    store: JwksStore,
    issuer: str,
    client_id: str,
    jwks_uri: str,
    nonce: str | None,
    algorithms: tuple[str, ...] | None,
) -> dict[str, Any]:
    """Verify an ID token and return its claims; raise ``ProviderError`` (``invalid_id_token``).

    ``nonce`` None: the token must carry no ``nonce`` check (refresh responses, OIDC §12.2).
    """
    allowed = tuple(a for a in (algorithms or ("RS256",)) if a in ASYMMETRIC_ALGORITHMS)
    if not allowed:
        raise ProviderError(
            f"issuer {issuer} announces no asymmetric ID token signing algorithm",
            error="invalid_id_token",
        )
    policy = IssuerPolicy(
        issuer=issuer,
        audience=client_id,
        algorithms=allowed,
        max_lifetime_seconds=ID_TOKEN_MAX_LIFETIME_SECONDS,
        required_claims=("sub",),
    )
    keys = await store.keys(http, clock, jwks_uri)
    try:
        try:
            claims = verify_jwt(token, keys, policy, clock)
        except UnknownKey:
            keys = await store.keys(http, clock, jwks_uri, refetch=True)
            claims = verify_jwt(token, keys, policy, clock)
    except IdentityError as exc:
        raise ProviderError(
            f"the provider's ID token was refused: {exc.message}",
            error="invalid_id_token",
            reason=exc.code,
        ) from exc
    if nonce is not None and claims.get("nonce") != nonce:
        raise ProviderError(
            "the provider's ID token does not carry the nonce sent with the authorization request",
            error="invalid_id_token",
            reason="nonce_mismatch",
        )
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise ProviderError("the provider's ID token has no usable sub", error="invalid_id_token")
    return claims
