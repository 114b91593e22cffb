"""JWT verification for workload identities (DESIGN §5).

Two steps, kept apart:

1. :func:`verify_signature` — the header's ``alg`` must be in the issuer's
   policy (never ``none``, never an HMAC algorithm: a policy cannot even list
   them), the key is chosen by ``kid`` from keys the caller trusts (never from
   ``jku``/``jwk``/``x5u`` in the header), and its type must fit the algorithm.
2. :func:`check_claims` — ``iss`` exact, one ``aud`` equal to the expected
   audience, ``exp`` and ``iat`` required, ``nbf`` checked when present, one
   leeway constant, and a maximum lifetime ``exp - iat``.

:func:`verify_jwt` runs both, in that order.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from joserfc.errors import BadSignatureError, InvalidKeyCurveError, InvalidKeyTypeError, JoseError
from joserfc.jwk import ECKey, Key, KeySet, OKPKey, RSAKey
from joserfc.jws import JWSRegistry, deserialize_compact

from valetkey.core.clock import Clock
from valetkey.identity.errors import (
    AlgorithmNotAllowed,
    AudienceMismatch,
    InvalidSignature,
    MalformedToken,
    MissingClaim,
    MultipleAudiences,
    TokenExpired,
    TokenLifetimeTooLong,
    TokenNotYetValid,
    UnknownKey,
    UntrustedIssuer,
)

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "LEEWAY_SECONDS",
    "MAX_TOKEN_LENGTH",
    "IssuerPolicy",
    "KeyLookup",
    "UnverifiedToken",
    "check_claims",
    "parse_unverified",
    "single_audience",
    "verify_jwt",
    "verify_signature",
]

#: The one clock-skew allowance, applied to exp, nbf and iat alike.
LEEWAY_SECONDS = 60
#: Longest bearer accepted at all; real workload tokens are 1-2 KiB.
MAX_TOKEN_LENGTH = 16 * 1024

#: Algorithms a policy may list; ``(kty, crv)`` the key must have (crv None: any).
_KEY_FOR_ALG: dict[str, tuple[type[Key], str | None]] = {
    "RS256": (RSAKey, None),
    "RS384": (RSAKey, None),
    "RS512": (RSAKey, None),
    "PS256": (RSAKey, None),
    "PS384": (RSAKey, None),
    "PS512": (RSAKey, None),
    "ES256": (ECKey, "P-256"),
    "ES384": (ECKey, "P-384"),
    "ES512": (ECKey, "P-521"),
    "EdDSA": (OKPKey, "Ed25519"),
}
ASYMMETRIC_ALGORITHMS = frozenset(_KEY_FOR_ALG)

_COMPACT = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")

#: A synchronous key lookup by kid (None when the header has no kid).
KeyLookup = Callable[[str | None], Key | None]


@dataclass(frozen=True, slots=True)
class IssuerPolicy:
    """What one issuer's tokens must satisfy. Every option is explicit."""

    issuer: str
    audience: str
    algorithms: tuple[str, ...]
    max_lifetime_seconds: int
    #: Claims required beyond the always-required iss, aud, exp and iat.
    required_claims: tuple[str, ...] = ("sub",)

    def __post_init__(self) -> None:
        if not self.issuer or not self.audience:
            raise ValueError("an issuer policy needs an issuer and an audience")
        if not self.algorithms:
            raise ValueError("an issuer policy needs at least one algorithm")
        refused = [a for a in self.algorithms if a not in ASYMMETRIC_ALGORITHMS]
        if refused:
            raise ValueError(f"algorithms not allowed in a policy: {refused}")
        if self.max_lifetime_seconds <= 0:
            raise ValueError("max_lifetime_seconds must be positive")


@dataclass(frozen=True, slots=True)
class UnverifiedToken:
    """A JWT split and decoded, nothing checked yet. Never trust its contents."""

    header: Mapping[str, Any]
    claims: Mapping[str, Any]


def _b64_json(segment: str, what: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise MalformedToken(f"the token's {what} is not base64url JSON", part=what) from exc
    if not isinstance(value, dict):
        raise MalformedToken(f"the token's {what} is not a JSON object", part=what)
    return value


def parse_unverified(token: str) -> UnverifiedToken:
    """Split and decode a compact JWS without verifying it, or raise ``malformed_token``."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH or not _COMPACT.match(token):
        raise MalformedToken("the identity is not a compact JWT (header.payload.signature)")
    header_segment, payload_segment, _ = token.split(".")
    header = _b64_json(header_segment, "header")
    claims = _b64_json(payload_segment, "payload")
    if not isinstance(header.get("alg"), str):
        raise MalformedToken("the token header has no 'alg'", part="header")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise MalformedToken("the token header's 'kid' is not a string", part="header")
    return UnverifiedToken(header=header, claims=claims)


def _select_key(keys: KeySet | KeyLookup, kid: str | None, issuer: str) -> Key:
    if isinstance(keys, KeySet):
        if kid is None:
            candidates = list(keys)
            if len(candidates) == 1:
                return candidates[0]
            raise UnknownKey(
                f"the token has no 'kid' and issuer {issuer} publishes several keys", issuer=issuer
            )
        for key in keys:
            if key.kid == kid:
                return key
        raise UnknownKey(
            f"issuer {issuer} publishes no key with kid {kid!r}", issuer=issuer, kid=kid
        )
    found = keys(kid)
    if found is None:
        raise UnknownKey(
            f"issuer {issuer} publishes no key with kid {kid!r}", issuer=issuer, kid=kid
        )
    return found


def _check_key_fits(key: Key, alg: str, issuer: str) -> None:
    key_type, curve = _KEY_FOR_ALG[alg]
    fits = isinstance(key, key_type)
    if fits and curve is not None:
        fits = key.get("crv") == curve
    use = key.get("use")
    key_alg = key.get("alg")
    if not fits or (use is not None and use != "sig") or (key_alg is not None and key_alg != alg):
        raise InvalidSignature(
            f"the key {key.kid!r} of issuer {issuer} cannot verify {alg} signatures",
            issuer=issuer,
        )


def _registry(alg: str) -> JWSRegistry:
    registry = JWSRegistry(algorithms=[alg], strict_check_header=False)
    # Instance limits: headers with an x5t or a short x5c still fit; payloads stay bounded.
    registry.max_header_length = 4096
    registry.max_payload_length = MAX_TOKEN_LENGTH
    return registry


def verify_signature(token: str, keys: KeySet | KeyLookup, policy: IssuerPolicy) -> UnverifiedToken:
    """Check the token's algorithm against ``policy`` and its signature against ``keys``.

    Returns the decoded token; raises ``malformed_token``, ``algorithm_not_allowed``,
    ``unknown_key`` or ``invalid_signature``.
    """
    parsed = parse_unverified(token)
    alg = parsed.header["alg"]
    if alg not in policy.algorithms:
        raise AlgorithmNotAllowed(
            f"algorithm {alg!r} is not allowed for issuer {policy.issuer} "
            f"(allowed: {', '.join(policy.algorithms)})",
            issuer=policy.issuer,
            algorithm=alg,
        )
    key = _select_key(keys, parsed.header.get("kid"), policy.issuer)
    _check_key_fits(key, alg, policy.issuer)
    try:
        deserialize_compact(token, key, registry=_registry(alg))
    except BadSignatureError as exc:
        raise InvalidSignature(
            f"the token's signature does not verify with issuer {policy.issuer}'s key",
            issuer=policy.issuer,
        ) from exc
    except (InvalidKeyTypeError, InvalidKeyCurveError) as exc:
        raise InvalidSignature(
            f"the key of issuer {policy.issuer} cannot verify {alg} signatures",
            issuer=policy.issuer,
        ) from exc
    except (JoseError, ValueError) as exc:
        raise MalformedToken("the token could not be decoded as a JWS") from exc
    return parsed


def _numeric(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise MalformedToken(f"claim {name!r} is not a NumericDate", claim=name)
    return float(value)


def single_audience(claims: Mapping[str, Any]) -> str:
    """The token's one audience, or raise (missing, several, or not a string)."""
    aud = claims.get("aud")
    if aud is None:
        raise MissingClaim("the token has no 'aud' claim", claim="aud")
    if isinstance(aud, list):
        if len(aud) > 1:
            raise MultipleAudiences(
                "the token carries several audiences; exactly one is accepted", claim="aud"
            )
        if len(aud) == 0:
            raise MissingClaim("the token's 'aud' claim is empty", claim="aud")
        aud = aud[0]
    if not isinstance(aud, str):
        raise MalformedToken("the token's 'aud' claim is not a string", claim="aud")
    return aud


def check_claims(claims: Mapping[str, Any], policy: IssuerPolicy, now: float) -> None:
    """Apply ``policy`` to verified claims; raise the first refusal."""
    iss = claims.get("iss")
    if iss is None:
        raise MissingClaim("the token has no 'iss' claim", claim="iss")
    if iss != policy.issuer:
        raise UntrustedIssuer(
            f"the token's issuer is not {policy.issuer}", claim="iss", expected=policy.issuer
        )
    if single_audience(claims) != policy.audience:
        raise AudienceMismatch(
            f"the token's audience is not the expected {policy.audience!r}",
            claim="aud",
            expected=policy.audience,
        )
    exp = _numeric(claims, "exp")
    iat = _numeric(claims, "iat")
    nbf = _numeric(claims, "nbf")
    if exp is None:
        raise MissingClaim("the token has no 'exp' claim", claim="exp")
    if iat is None:
        raise MissingClaim("the token has no 'iat' claim", claim="iat")
    for name in policy.required_claims:
        if claims.get(name) is None:
            raise MissingClaim(f"the token has no {name!r} claim", claim=name)
    if now >= exp + LEEWAY_SECONDS:
        raise TokenExpired("the token has expired", claim="exp")
    if nbf is not None and nbf > now + LEEWAY_SECONDS:
        raise TokenNotYetValid("the token is not valid yet ('nbf' is in the future)", claim="nbf")
    if iat > now + LEEWAY_SECONDS:
        raise TokenNotYetValid("the token was issued in the future ('iat')", claim="iat")
    if exp <= iat:
        raise MalformedToken("the token's 'exp' is not after its 'iat'", claim="exp")
    if exp - iat > policy.max_lifetime_seconds:
        raise TokenLifetimeTooLong(
            f"the token's lifetime is longer than {policy.max_lifetime_seconds} seconds "
            f"accepted for issuer {policy.issuer}",
            claim="exp",
            max_lifetime_seconds=policy.max_lifetime_seconds,
        )


def verify_jwt(
    token: str, keys: KeySet | KeyLookup, policy: IssuerPolicy, clock: Clock
) -> dict[str, Any]:
    """Verify a JWT's signature, then its claims; return the claims."""
    parsed = verify_signature(token, keys, policy)
    check_claims(parsed.claims, policy, clock.timestamp())
    return dict(parsed.claims)
