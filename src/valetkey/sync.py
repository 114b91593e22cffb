"""The synchronous twins of ``valetkey.get_token`` and friends, on a process-wide client.

    from valetkey.sync import get_token

    token = get_token("slack/mybot", scopes=["chat:write"])
"""

from __future__ import annotations

from collections.abc import Iterable

from valetkey.sdk.client import Client
from valetkey.sdk.default import default_client
from valetkey.sdk.types import (
    AuthorizationResponse,
    Confirmation,
    ConnectorMetadata,
    RevokeResult,
    SubjectLike,
    TokenResponse,
)

__all__ = [
    "Client",
    "confirm_authorization",
    "get_connector",
    "get_token",
    "get_token_response",
    "revoke_tokens",
    "start_authorization",
]


def get_token(
    uid: str,
    *,
    subject: SubjectLike | None = None,
    user: str | None = None,
    scopes: str | Iterable[str] | None = None,
    installation_id: str | None = None,
    resources: str | Iterable[str] | None = None,
    audience: str | None = None,
    force_refresh: bool = False,
    no_cache: bool = False,
) -> str:
    """A provider token for connector ``uid`` (see ``Client.get_token_response``)."""
    return default_client().get_token(
        uid,
        subject=subject,
        user=user,
        scopes=scopes,
        installation_id=installation_id,
        resources=resources,
        audience=audience,
        force_refresh=force_refresh,
        no_cache=no_cache,
    )


def get_token_response(
    uid: str,
    *,
    subject: SubjectLike | None = None,
    user: str | None = None,
    scopes: str | Iterable[str] | None = None,
    installation_id: str | None = None,
    resources: str | Iterable[str] | None = None,
    audience: str | None = None,
    force_refresh: bool = False,
    no_cache: bool = False,
) -> TokenResponse:
    """A provider token and its metadata (see ``Client.get_token_response``)."""
    return default_client().get_token_response(
        uid,
        subject=subject,
        user=user,
        scopes=scopes,
        installation_id=installation_id,
        resources=resources,
        audience=audience,
        force_refresh=force_refresh,
        no_cache=no_cache,
    )


def start_authorization(
    uid: str,
    *,
    user: str,
    scopes: str | Iterable[str] | None = None,
    return_url: str | None = None,
    webhook: str | None = None,
    device_code: bool = False,
    installation_id: str | None = None,
) -> AuthorizationResponse:
    """Start a user's consent for connector ``uid``."""
    return default_client().start_authorization(
        uid,
        user=user,
        scopes=scopes,
        return_url=return_url,
        webhook=webhook,
        device_code=device_code,
        installation_id=installation_id,
    )


def confirm_authorization(uid: str, *, request: str, verifier: str) -> Confirmation:
    """Confirm that the named user finished consent ``request`` (see ``Client.confirm_authorization``)."""
    return default_client().confirm_authorization(uid, request=request, verifier=verifier)


def revoke_tokens(
    uid: str,
    *,
    subject: SubjectLike | None = None,
    user: str | None = None,
    all_tokens: bool = False,
) -> RevokeResult:
    """Revoke one subject's tokens for connector ``uid``, or every subject's."""
    return default_client().revoke_tokens(uid, subject=subject, user=user, all_tokens=all_tokens)


def get_connector(uid: str) -> ConnectorMetadata:
    """Connector ``uid``'s public description."""
    return default_client().get_connector(uid)
