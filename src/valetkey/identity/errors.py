"""Why an identity was refused: one class per reason, each with its own stable ``code``.

Messages name the claim, the issuer or the expected audience; they never hold the
token, nor any part of it.
"""

from __future__ import annotations

from valetkey.errors import IdentityError

__all__ = [
    "AlgorithmNotAllowed",
    "AmbiguousBinding",
    "AudienceMismatch",
    "EnvironmentMismatch",
    "IdentityError",
    "InvalidSignature",
    "IssuerUnreachable",
    "MalformedToken",
    "MissingClaim",
    "MultipleAudiences",
    "NoMatchingBinding",
    "TokenExpired",
    "TokenLifetimeTooLong",
    "TokenNotYetValid",
    "TokenRevoked",
    "UnknownKey",
    "UntrustedIssuer",
]


class MalformedToken(IdentityError):
    """The identity token is not a well-formed JWT or access token."""

    code = "malformed_token"


class AlgorithmNotAllowed(IdentityError):
    """The token's signing algorithm is not one this issuer is allowed to use."""

    code = "algorithm_not_allowed"


class InvalidSignature(IdentityError):
    """The token's signature does not verify with the issuer's key."""

    code = "invalid_signature"


class UnknownKey(IdentityError):
    """The token names a signing key (kid) the issuer does not publish."""

    code = "unknown_key"


class TokenExpired(IdentityError):
    """The token has expired."""

    code = "token_expired"


class TokenNotYetValid(IdentityError):
    """The token is not valid yet (nbf or iat in the future)."""

    code = "token_not_yet_valid"


class MissingClaim(IdentityError):
    """The token lacks a required claim."""

    code = "missing_claim"


class AudienceMismatch(IdentityError):
    """The token was issued for another audience."""

    code = "audience_mismatch"


class MultipleAudiences(IdentityError):
    """The token carries several audiences; exactly one is accepted."""

    code = "multiple_audiences"


class UntrustedIssuer(IdentityError):
    """No trust binding exists for the token's issuer."""

    code = "untrusted_issuer"
    remedy = "Create a trust binding for this issuer: valetkey trust add ..."


class TokenLifetimeTooLong(IdentityError):
    """The token's lifetime (exp - iat) is longer than the broker accepts."""

    code = "token_lifetime_too_long"


class NoMatchingBinding(IdentityError):
    """The token is genuine, but its claims match no trust binding."""

    code = "no_matching_binding"
    status = 403


class AmbiguousBinding(IdentityError):
    """Equally specific trust bindings map the token to different projects or environments."""

    code = "ambiguous_binding"
    status = 403
    remedy = "Make one binding more specific (add a claim condition), or remove one."


class EnvironmentMismatch(IdentityError):
    """The identity belongs to another environment than the one it is used for."""

    code = "environment_mismatch"
    status = 403


class TokenRevoked(IdentityError):
    """The access token is unknown, revoked or expired."""

    code = "token_revoked"


class IssuerUnreachable(IdentityError):
    """The issuer's discovery document or JWKS could not be fetched or was refused."""

    code = "issuer_unreachable"
    status = 503

