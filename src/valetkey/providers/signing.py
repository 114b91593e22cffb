"""The connector's private key, and the JWTs Valetkey signs with it (joserfc).

- RFC 7523 §2.2 client assertions (``private_key_jwt`` client authentication);
- RFC 7523 §2.1 authorization grants (the ``jwt-bearer`` subject).

Keys are PEM (PKCS#8, PKCS#1 or SEC1): RSA of at least 2048 bits signs RS256, EC P-256
signs ES256. The algorithm follows the key type, never a setting. A key is never put in
a message, a ``repr`` or a log line.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey

from valetkey.core.clock import Clock

__all__ = [
    "ASSERTION_LIFETIME_SECONDS",
    "MAX_PEM_LENGTH",
    "KeyRefused",
    "SigningKey",
    "authorization_grant",
    "client_assertion",
]

#: Lifetime of every assertion Valetkey signs (RFC 7523 §3 asks for a short one; 5 min at most).
ASSERTION_LIFETIME_SECONDS = 120
MAX_PEM_LENGTH = 16 * 1024
_MIN_RSA_BITS = 2048


class KeyRefused(ValueError):
    """The PEM is not a usable private signing key; the message never holds the key."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A private key and the one algorithm it signs with."""

    key: RSAKey | ECKey = field(repr=False)
    alg: str
    kid: str | None = None

    @classmethod
    def from_pem(cls, pem: str, kid: str | None = None) -> SigningKey:
        """Load an RSA (≥2048 bits → RS256) or EC P-256 (→ ES256) private key."""
        if not isinstance(pem, str) or not pem.strip() or len(pem) > MAX_PEM_LENGTH:
            raise KeyRefused(f"the key must be a PEM string of at most {MAX_PEM_LENGTH} characters")
        if "PRIVATE KEY-----" not in pem:
            raise KeyRefused("the key must be a PEM private key (BEGIN ... PRIVATE KEY)")
        data = pem.strip().encode()
        rsa_error: Exception | None = None
        try:
            rsa = RSAKey.import_key(data)
        except (JoseError, ValueError, TypeError) as exc:
            rsa_error = exc
        else:
            if not rsa.is_private:
                raise KeyRefused("the key must be a private key")
            private = rsa.private_key
            if private is None or private.key_size < _MIN_RSA_BITS:
                raise KeyRefused(f"an RSA key must have at least {_MIN_RSA_BITS} bits")
            return cls(rsa, "RS256", kid)
        try:
            ec = ECKey.import_key(data)
        except (JoseError, ValueError, TypeError) as exc:
            raise KeyRefused("the key is neither an RSA nor an EC private key in PEM") from (
                rsa_error or exc
            )
        if not ec.is_private:
            raise KeyRefused("the key must be a private key")
        if ec.curve_name != "P-256":
            raise KeyRefused("an EC key must be on curve P-256 (ES256)")
        return cls(ec, "ES256", kid)

    def public_jwk(self) -> dict[str, Any]:
        """The public half as a JWK (to register with the provider)."""
        jwk: dict[str, Any] = dict(self.key.as_dict(private=False))
        jwk.update({"alg": self.alg, "use": "sig"})
        if self.kid is not None:
            jwk["kid"] = self.kid
        return jwk

    def sign(self, claims: Mapping[str, Any]) -> str:
        """A compact JWS over ``claims`` with ``typ: JWT`` and this key's ``alg`` and ``kid``."""
        header: dict[str, Any] = {"alg": self.alg, "typ": "JWT"}
        if self.kid is not None:
            header["kid"] = self.kid
        return jwt.encode(header, dict(claims), self.key, algorithms=[self.alg])


def _timed(clock: Clock, lifetime: int) -> dict[str, Any]:
    now = int(clock.timestamp())
    return {"iat": now, "exp": now + lifetime, "jti": secrets.token_urlsafe(24)}


def client_assertion(key: SigningKey, clock: Clock, *, client_id: str, audience: str) -> str:
    """RFC 7523 §2.2 / §3: ``iss`` = ``sub`` = client id, ``aud`` the server, fresh ``jti``."""
    claims = {"iss": client_id, "sub": client_id, "aud": audience}
    claims.update(_timed(clock, ASSERTION_LIFETIME_SECONDS))
    return key.sign(claims)


def authorization_grant(
    key: SigningKey,
    clock: Clock,
    *,
    issuer: str,
    subject: str,
    audience: str,
    claims: Mapping[str, Any] | None = None,
) -> str:
    """RFC 7523 §2.1 / §3: an assertion that ``subject`` authorizes the client.

    ``claims`` adds members but cannot replace ``iss``, ``sub``, ``aud``, ``exp``,
    ``iat`` or ``jti``.
    """
    body: dict[str, Any] = dict(claims or {})
    body.update({"iss": issuer, "sub": subject, "aud": audience})
    body.update(_timed(clock, ASSERTION_LIFETIME_SECONDS))
    return key.sign(body)
