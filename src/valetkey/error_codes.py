"""Wire code to error class: the one static table the SDK and the CLI rebuild refusals with.

A broker's refusal arrives as ``{"error": {"code", "message", ...details}}``; :func:`error_for_code`
turns it back into the class that defines that ``code``. The table is written out here, so a code
maps to the same class whatever else the process happens to have imported.

It holds every error a broker sends: the classes of :mod:`valetkey.errors`,
:mod:`valetkey.identity.errors` and :mod:`valetkey.crypto.errors` (all three import only the
standard library, as the SDK needs). Not in it, on purpose, are errors never sent: the CLI's own
(:mod:`valetkey.cli.errors`) and those raised while a broker starts (``insecure_storage``,
``provider_plugin_error``).

A code not in the table (a newer broker's, or one of the above) becomes the nearest class by HTTP
status (:data:`STATUS_FALLBACK`), else :class:`~valetkey.errors.ValetkeyError`, and keeps its code.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from valetkey import errors as e
from valetkey.crypto import errors as ce
from valetkey.identity import errors as ie

__all__ = ["ERROR_CLASSES", "STATUS_FALLBACK", "error_for_code"]

_CLASSES: tuple[type[e.ValetkeyError], ...] = (
    # valetkey.errors: the SDK's public error classes.
    e.ValetkeyError,
    e.InvalidRequest,
    e.PayloadTooLarge,
    e.UnsupportedOperation,
    e.IdentityError,
    e.IdentityNotFound,
    e.Forbidden,
    e.NotFound,
    e.Conflict,
    e.ConnectorLinked,
    e.AudienceTaken,
    e.LastOwner,
    e.PolicyDenied,
    e.ConnectorNotLinked,
    e.EnvironmentNotLinked,
    e.SubjectNotAllowed,
    e.ScopeNotAllowed,
    e.TargetNotAllowed,
    e.GrantedScopeUnknown,
    e.UserAuthorizationRequired,
    e.InstallationRequired,
    e.AuthorizationPending,
    e.AccessDenied,
    e.AuthorizationExpired,
    e.VerificationFailed,
    e.InvalidGrant,
    e.ProviderError,
    e.ProviderTimeout,
    e.ProviderBusy,
    e.BrokerUnavailable,
    e.AuditUnavailable,
    e.InvalidBrokerResponse,
    # valetkey.identity.errors: why an identity was refused (all IdentityError).
    ie.MalformedToken,
    ie.AlgorithmNotAllowed,
    ie.InvalidSignature,
    ie.UnknownKey,
    ie.TokenExpired,
    ie.TokenNotYetValid,
    ie.MissingClaim,
    ie.AudienceMismatch,
    ie.MultipleAudiences,
    ie.UntrustedIssuer,
    ie.TokenLifetimeTooLong,
    ie.NoMatchingBinding,
    ie.AmbiguousBinding,
    ie.EnvironmentMismatch,
    ie.TokenRevoked,
    ie.IssuerUnreachable,
    # valetkey.crypto.errors: the key ring and envelope encryption failed inside the broker.
    ce.CryptoError,
    ce.DecryptionError,
    ce.UnknownKeyError,
    ce.MalformedCiphertext,
    ce.InvalidKek,
    ce.KeyFileError,
    ce.InsecureKeyFile,
    ce.KeyRingError,
)

#: Every code a broker sends, and the class that defines it.
ERROR_CLASSES: Mapping[str, type[e.ValetkeyError]] = MappingProxyType(
    {cls.code: cls for cls in _CLASSES}
)

#: The class for a code not in :data:`ERROR_CLASSES`, by HTTP status.
STATUS_FALLBACK: Mapping[int, type[e.ValetkeyError]] = MappingProxyType(
    {
        400: e.InvalidRequest,
        401: e.IdentityError,
        403: e.Forbidden,
        404: e.NotFound,
        409: e.Conflict,
    }
)


def error_for_code(
    code: str, message: str, status: int, details: Mapping[str, Any]
) -> e.ValetkeyError:
    """The error a refusal's wire ``code`` names, built with its ``message`` and ``details``.

    A code this version does not know becomes the nearest class by HTTP ``status`` (else
    :class:`~valetkey.errors.ValetkeyError`) and keeps its code, so a newer broker's refusals
    stay readable and catchable.
    """
    precise = details.get("valetkeyCode")
    if isinstance(precise, str):  # Valetkey's precise code, next to the official clients' one
        code, details = precise, {k: v for k, v in details.items() if k != "valetkeyCode"}
    cls = ERROR_CLASSES.get(code)
    if cls is not None:
        return cls(message, **dict(details))
    err = STATUS_FALLBACK.get(status, e.ValetkeyError)(message, **dict(details))
    err.code = code  # type: ignore[misc]  # an instance's own code: the one the broker sent
    return err
