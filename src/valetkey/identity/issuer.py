"""The broker's own OIDC issuer: discovery document, JWKS, and the tokens it signs.

It signs development identities (``valetkey env pull``) and any other broker
token (trigger attestations) with the current ES256 key; it verifies its own
tokens with the same rules as any other issuer's (:mod:`valetkey.identity.jwt`).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

from joserfc import jwt

from valetkey.core.clock import Clock
from valetkey.errors import InvalidRequest
from valetkey.identity.jwt import IssuerPolicy, verify_jwt
from valetkey.identity.keys import SIGNING_ALGORITHM, SigningKeys

__all__ = [
    "BROKER_AUDIENCE",
    "DEVELOPMENT_ENVIRONMENT",
    "DEVELOPMENT_KIND",
    "BrokerIssuer",
]

BROKER_AUDIENCE = "valetkey"
DEVELOPMENT_KIND = "development"
DEVELOPMENT_ENVIRONMENT = "development"
_RESERVED = frozenset({"iss", "aud", "iat", "nbf", "exp", "jti"})


class BrokerIssuer:
    """Mints and verifies the broker's own JWTs, and publishes their keys."""

    #: The longest token the broker signs or accepts from itself.
    max_lifetime_seconds = 24 * 3600

    def __init__(self, keys: SigningKeys, issuer_url: str, clock: Clock) -> None:
        if not issuer_url.startswith(("https://", "http://")):
            raise ValueError("the issuer URL must be an http(s) URL")
        self.keys = keys
        self.issuer = issuer_url.rstrip("/")
        self._clock = clock

    def __repr__(self) -> str:
        return f"BrokerIssuer(issuer={self.issuer!r}, keys={self.keys!r})"

    @property
    def jwks_uri(self) -> str:
        return f"{self.issuer}/.well-known/jwks.json"

    def openid_configuration(self) -> dict[str, Any]:
        """The body of ``/.well-known/openid-configuration``."""
        return {
            "issuer": self.issuer,
            "jwks_uri": self.jwks_uri,
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [SIGNING_ALGORITHM],
            "claims_supported": [
                "sub", "aud", "exp", "iat", "iss", "jti", "nbf",
                "vk_kind", "vk_team", "vk_project", "vk_project_slug", "vk_env",
            ],
        }  # fmt: skip

    def jwks(self) -> dict[str, Any]:
        """The body of ``/.well-known/jwks.json``: public keys only, previous keys included."""
        return self.keys.public_jwks()

    def mint(self, claims: Mapping[str, Any], *, audience: str, ttl_seconds: int) -> str:
        """Sign ``claims`` for ``audience``, adding iss, aud, iat, nbf, exp and jti."""
        clash = _RESERVED.intersection(claims)
        if clash:
            raise InvalidRequest(f"claims set by the issuer cannot be given: {sorted(clash)}")
        if not audience:
            raise InvalidRequest("a token needs an audience")
        if not 0 < ttl_seconds <= self.max_lifetime_seconds:
            raise InvalidRequest(
                f"token lifetime must be 1..{self.max_lifetime_seconds} seconds", field="ttl"
            )
        now = int(self._clock.timestamp())
        body = {
            **claims,
            "iss": self.issuer,
            "aud": audience,
            "iat": now,
            "nbf": now,
            "exp": now + ttl_seconds,
            "jti": secrets.token_urlsafe(16),
        }
        key = self.keys.current
        header = {"alg": SIGNING_ALGORITHM, "kid": key.kid, "typ": "JWT"}
        return jwt.encode(header, body, key, algorithms=[SIGNING_ALGORITHM])

    def mint_development_identity(
        self,
        *,
        team_id: str,
        project_id: str,
        project_slug: str,
        subject: str,
        ttl_seconds: int = 8 * 3600,
    ) -> str:
        """A development identity: hours long, usable only in the development environment."""
        claims = {
            "sub": subject,
            "vk_kind": DEVELOPMENT_KIND,
            "vk_team": team_id,
            "vk_project": project_id,
            "vk_project_slug": project_slug,
            "vk_env": DEVELOPMENT_ENVIRONMENT,
        }
        return self.mint(claims, audience=BROKER_AUDIENCE, ttl_seconds=ttl_seconds)

    def policy(self, audience: str) -> IssuerPolicy:
        """The rules the broker's own tokens are verified with."""
        return IssuerPolicy(
            issuer=self.issuer,
            audience=audience,
            algorithms=(SIGNING_ALGORITHM,),
            max_lifetime_seconds=self.max_lifetime_seconds,
            required_claims=("nbf", "jti"),
        )

    def verify_own(self, token: str, *, audience: str) -> dict[str, Any]:
        """Verify a token this broker signed (any of its current or previous keys)."""
        return verify_jwt(token, self.keys.verification_keys(), self.policy(audience), self._clock)
