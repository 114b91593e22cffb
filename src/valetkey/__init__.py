"""Valetkey: short-lived provider credentials for agents and apps, from your own broker.

    import valetkey

    token = await valetkey.get_token("slack/mybot", scopes=["chat:write"])
    token = await valetkey.get_token("github/deploy-bot", user="alice")

The functions here are async and use a default :class:`AsyncClient` configured from
the environment; ``valetkey.sync`` has the same functions for synchronous code, and
:class:`Client` / :class:`AsyncClient` take explicit configuration.

Importing this package is cheap: the errors load now, the client (and httpx2) on
first use of any other name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from valetkey._lazy import lazy_attributes
from valetkey.errors import (
    AccessDenied,
    AudienceTaken,
    AuditUnavailable,
    AuthorizationExpired,
    AuthorizationPending,
    BrokerUnavailable,
    Conflict,
    ConnectorLinked,
    ConnectorNotLinked,
    EnvironmentNotLinked,
    Forbidden,
    GrantedScopeUnknown,
    IdentityError,
    IdentityNotFound,
    InstallationRequired,
    InvalidBrokerResponse,
    InvalidGrant,
    InvalidRequest,
    LastOwner,
    NotFound,
    PayloadTooLarge,
    PolicyDenied,
    ProviderBusy,
    ProviderError,
    ProviderTimeout,
    ScopeNotAllowed,
    SubjectNotAllowed,
    TargetNotAllowed,
    UnsupportedOperation,
    UserAuthorizationRequired,
    ValetkeyError,
    VerificationFailed,
)

if TYPE_CHECKING:
    from valetkey.sdk.auth import TokenAuth
    from valetkey.sdk.client import AsyncClient, Client
    from valetkey.sdk.default import (
        confirm_authorization,
        get_connector,
        get_token,
        get_token_response,
        revoke_tokens,
        start_authorization,
    )
    from valetkey.sdk.httpx_auth import HttpxTokenAuth
    from valetkey.sdk.types import (
        AuthorizationResponse,
        Confirmation,
        ConnectorMetadata,
        ConnectorRef,
        RevokeResult,
        Subject,
        TokenResponse,
    )

__all__ = [
    "AccessDenied",
    "AsyncClient",
    "AudienceTaken",
    "AuditUnavailable",
    "AuthorizationExpired",
    "AuthorizationPending",
    "AuthorizationResponse",
    "BrokerUnavailable",
    "Client",
    "Confirmation",
    "Conflict",
    "ConnectorLinked",
    "ConnectorMetadata",
    "ConnectorNotLinked",
    "ConnectorRef",
    "EnvironmentNotLinked",
    "Forbidden",
    "GrantedScopeUnknown",
    "HttpxTokenAuth",
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
    "RevokeResult",
    "ScopeNotAllowed",
    "Subject",
    "SubjectNotAllowed",
    "TargetNotAllowed",
    "TokenAuth",
    "TokenResponse",
    "UnsupportedOperation",
    "UserAuthorizationRequired",
    "ValetkeyError",
    "VerificationFailed",
    "confirm_authorization",
    "get_connector",
    "get_token",
    "get_token_response",
    "revoke_tokens",
    "start_authorization",
]

_LAZY = {
    "AsyncClient": "valetkey.sdk.client",
    "Client": "valetkey.sdk.client",
    "TokenAuth": "valetkey.sdk.auth",
    "HttpxTokenAuth": "valetkey.sdk.httpx_auth",  # imports httpx2: valetkey[httpx2]
    "confirm_authorization": "valetkey.sdk.default",
    "get_connector": "valetkey.sdk.default",
    "get_token": "valetkey.sdk.default",
    "get_token_response": "valetkey.sdk.default",
    "revoke_tokens": "valetkey.sdk.default",
    "start_authorization": "valetkey.sdk.default",
    "AuthorizationResponse": "valetkey.sdk.types",
    "Confirmation": "valetkey.sdk.types",
    "ConnectorMetadata": "valetkey.sdk.types",
    "ConnectorRef": "valetkey.sdk.types",
    "RevokeResult": "valetkey.sdk.types",
    "Subject": "valetkey.sdk.types",
    "TokenResponse": "valetkey.sdk.types",
}


__getattr__, __dir__ = lazy_attributes(globals(), _LAZY)
