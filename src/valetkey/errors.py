"""One error hierarchy for the broker, the CLI and the SDK.

Every class has a stable machine ``code`` (what goes on the wire in
``{"error": {"code", "message", ...}}``) and an HTTP ``status``. The server maps
these to responses in exactly one place (``valetkey.server.errors``); the SDK
and the CLI map wire codes back to classes through one static table,
:data:`valetkey.error_codes.ERROR_CLASSES`.

This module imports nothing outside the standard library: the SDK uses it.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "AccessDenied",
    "AudienceTaken",
    "AuditUnavailable",
    "AuthorizationExpired",
    "AuthorizationPending",
    "BrokerUnavailable",
    "Conflict",
    "ConnectorLinked",
    "ConnectorNotLinked",
    "EnvironmentNotLinked",
    "Forbidden",
    "GrantedScopeUnknown",
    "IdentityError",
    "IdentityNotFound",
    "InstallationRequired",
    "InvalidBrokerResponse",
    "InvalidGrant",
    "InvalidRequest",
    "LastOwner",
    "NotFound",
    "PayloadTooLarge",
    "PolicyDenied",
    "ProviderBusy",
    "ProviderError",
    "ProviderTimeout",
    "ScopeNotAllowed",
    "SubjectNotAllowed",
    "TargetNotAllowed",
    "UnsupportedOperation",
    "UserAuthorizationRequired",
    "ValetkeyError",
    "VerificationFailed",
]


class ValetkeyError(Exception):
    """Base of every error Valetkey raises on purpose.

    ``message`` is for people and never holds a secret; ``details`` holds
    machine-readable context (which claim, which scope, which environment) and is
    sent on the wire next to ``code`` and ``message``.
    """

    code: ClassVar[str] = "internal_error"
    status: ClassVar[int] = 500
    #: What a person can do about it; shown by the CLI under the message.
    remedy: ClassVar[str | None] = None
    #: The code Vercel Connect's official clients branch on, where it is not ``code`` (set on the
    #: class or on one error): it goes on the wire as ``code``, and ``code`` as ``valetkeyCode``.
    wire_code: str | None = None

    def __init__(self, message: str | None = None, **details: Any) -> None:
        self.message = message or self.__class__.__doc__ or self.code
        self.details: dict[str, Any] = details
        super().__init__(self.message)

    def to_wire(self) -> dict[str, Any]:
        """The error envelope body: ``{"error": {"code", "message", ...details}}``."""
        code = self.wire_code or self.code
        body: dict[str, Any] = {"code": code, "message": self.message}
        if code != self.code:
            body["valetkeyCode"] = self.code
        for key, value in self.details.items():
            body.setdefault(key, value)
        return {"error": body}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class InvalidRequest(ValetkeyError):
    """The request is malformed."""

    code = "invalid_request"
    status = 400


class PayloadTooLarge(InvalidRequest):
    """The request body is larger than the broker accepts."""

    code = "payload_too_large"
    status = 413


class IdentityError(ValetkeyError):
    """The caller's identity could not be verified.

    Subclassed per reason by the identity layer; every reason has its own code
    (``token_expired``, ``audience_mismatch``, ``untrusted_issuer``, ...).
    """

    code = "invalid_identity"
    status = 401
    remedy = "Check the identity token: VALETKEY_TOKEN, VALETKEY_OIDC_TOKEN or `valetkey env pull`."


class IdentityNotFound(IdentityError):
    """No identity to present to the broker was found (raised by the SDK, before any request)."""

    code = "identity_not_found"
    status = 401
    remedy = (
        "Pass identity=..., set VALETKEY_TOKEN or VALETKEY_OIDC_TOKEN, point "
        "VALETKEY_OIDC_TOKEN_FILE at a token file, run in GitHub Actions with "
        "`permissions: id-token: write`, or run `valetkey env pull` to write a .env."
    )


class Forbidden(ValetkeyError):
    """The caller is authenticated but may not do this."""

    code = "forbidden"
    status = 403


class NotFound(ValetkeyError):
    """The connector, project or record named does not exist."""

    code = "not_found"
    status = 404


class Conflict(ValetkeyError):
    """The request conflicts with existing state."""

    code = "conflict"
    status = 409


class ConnectorLinked(Conflict):
    """The connector is still attached to projects."""

    code = "connector_linked"
    remedy = "Detach it first, or pass --disconnect-all."


class AudienceTaken(Conflict):
    """Another team's trust bindings already use this (issuer, audience) pair.

    The refusal never names the other team: it only says the pair is taken.
    """

    code = "audience_taken"
    remedy = (
        "Use an audience of your own for this issuer (e.g. valetkey:<team-slug>) and set the "
        "workload's token audience to it."
    )


class LastOwner(Conflict):
    """The team's last owner cannot be revoked: no one could manage the team afterwards."""

    code = "last_owner"
    remedy = "Make another member an owner first."


class PolicyDenied(ValetkeyError):
    """The request is outside what the project link allows."""

    code = "policy_denied"
    status = 403


class ConnectorNotLinked(PolicyDenied):
    """The connector is not attached to the caller's project."""

    code = "connector_not_linked"
    #: The official clients' adapters recognize an unlinked connector as ``forbidden`` with
    #: "connector is not linked to this project" in the message (and may then provision it).
    wire_code = "forbidden"
    remedy = "Attach it: valetkey connect attach UID --project P -e ENV."


class EnvironmentNotLinked(PolicyDenied):
    """The connector is attached to the project, but not for the caller's environment."""

    code = "environment_not_linked"


class SubjectNotAllowed(PolicyDenied):
    """The link does not allow this subject type."""

    code = "subject_not_allowed"


class ScopeNotAllowed(PolicyDenied):
    """A requested scope is above the link's ceiling."""

    code = "scope_not_allowed"


class TargetNotAllowed(PolicyDenied):
    """A requested resource (RFC 8707) or audience is not among those the link allows."""

    code = "target_not_allowed"
    remedy = "Allow it on the link: valetkey connect attach UID ... --resources R / --audiences A."


class GrantedScopeUnknown(PolicyDenied):
    """The provider did not say which scopes it granted, and the link serves only known scopes."""

    code = "granted_scope_unknown"
    remedy = (
        "Ask the provider to state the granted scope, or allow such tokens on the link: "
        "valetkey connect attach UID ... --allow-unknown-scope."
    )


class UnsupportedOperation(InvalidRequest):
    """The connector's provider cannot do what was asked."""

    code = "unsupported_operation"


class UserAuthorizationRequired(ValetkeyError):
    """This user has not consented yet, or must consent again."""

    # The one class that says "the user must act: start a new consent". Its subclasses say why
    # the last consent ended (AccessDenied: the user refused; AuthorizationExpired: it expired),
    # so `except UserAuthorizationRequired` starts a new consent in every case (docs/errors.md).

    code = "user_authorization_required"
    status = 403


class InstallationRequired(ValetkeyError):
    """The connector is not installed for the target tenant."""

    code = "connector_installation_required"
    status = 403


class AuthorizationPending(ValetkeyError):
    """A device-code authorization is still waiting for the user."""

    code = "authorization_pending"
    status = 400


class AccessDenied(UserAuthorizationRequired):
    """The user refused the authorization request."""

    code = "access_denied"
    status = 403


class AuthorizationExpired(UserAuthorizationRequired):
    """The authorization request expired before the user finished it."""

    code = "expired_token"
    status = 400


class VerificationFailed(ValetkeyError):
    """The verifier does not match this authorization request."""

    code = "verification_failed"
    status = 403


class InvalidGrant(ValetkeyError):
    """The provider no longer accepts the stored grant."""

    code = "invalid_grant"
    status = 400


class ProviderError(ValetkeyError):
    """The provider refused or failed the request."""

    code = "provider_error"
    status = 502


class ProviderTimeout(ProviderError):
    """The provider did not answer within the broker's deadline for one call."""

    code = "provider_timeout"
    status = 504


class ProviderBusy(ValetkeyError):
    """The connector already has as many provider calls in flight as it may; retry shortly.

    ``retryAfterSeconds`` in the details is also sent as the ``Retry-After`` header.
    """

    code = "provider_busy"
    status = 503


class BrokerUnavailable(ValetkeyError):
    """The broker could not be reached."""

    code = "broker_unavailable"
    status = 503


class AuditUnavailable(BrokerUnavailable):
    """The broker cannot record this request in its audit log right now, so it does not act on it.

    Sent when the audit backlog is full (the database is slow or unreachable); ``retryAfterSeconds``
    (also the ``Retry-After`` header) says when to try again.
    """

    code = "audit_unavailable"
    status = 503
    remedy = "Retry after a moment; if it persists, check the broker's database (GET /readyz)."


class InvalidBrokerResponse(ValetkeyError):
    """The broker answered with a body the SDK cannot read (not JSON, or fields missing)."""

    code = "invalid_broker_response"
    status = 502

