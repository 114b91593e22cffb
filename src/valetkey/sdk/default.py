"""The default clients behind the module-level functions ``valetkey.get_token`` and friends.

Created lazily, configured from the environment (see :mod:`valetkey.sdk.identity`).
One sync client per process; one async client per event loop, since an
``httpx2.AsyncClient`` cannot move between loops.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Iterable

from valetkey.sdk.client import AsyncClient, Client
from valetkey.sdk.types import (
    AuthorizationResponse,
    Confirmation,
    ConnectorMetadata,
    RevokeResult,
    SubjectLike,
    TokenResponse,
)

__all__ = [
    "default_async_client",
    "default_client",
    "get_connector",
    "get_token",
    "get_token_response",
    "reset_default_clients",
    "revoke_tokens",
    "start_authorization",
]

_lock = threading.Lock()
_sync_client: Client | None = None
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncClient] = (
    weakref.WeakKeyDictionary()
)


def default_client() -> Client:
    """The process-wide sync client, created on first use."""
    global _sync_client
    client = _sync_client
    if client is None:
        with _lock:
            if _sync_client is None:
                _sync_client = Client()
            client = _sync_client
    return client


def default_async_client() -> AsyncClient:
    """The async client of the running event loop, created on first use."""
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        with _lock:
            client = _async_clients.get(loop)
            if client is None:
                client = AsyncClient()
                _async_clients[loop] = client
    return client


def reset_default_clients() -> None:
    """Forget the default clients (the sync one is closed), so the next call re-reads config."""
    global _sync_client
    with _lock:
        if _sync_client is not None:
            _sync_client.close()
        _sync_client = None
        _async_clients.clear()


async def get_token(
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
    """A provider token for connector ``uid`` (see ``AsyncClient.get_token_response``)."""
    return await default_async_client().get_token(
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


async def get_token_response(
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
    """A provider token and its metadata (see ``AsyncClient.get_token_response``)."""
    return await default_async_client().get_token_response(
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


async def start_authorization(
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
    return await default_async_client().start_authorization(
        uid,
        user=user,
        scopes=scopes,
        return_url=return_url,
        webhook=webhook,
        device_code=device_code,
        installation_id=installation_id,
    )


async def confirm_authorization(uid: str, *, request: str, verifier: str) -> Confirmation:
    """Confirm that the named user finished consent ``request`` (see ``AsyncClient.confirm_authorization``)."""
    return await default_async_client().confirm_authorization(uid, request=request, verifier=verifier)


async def revoke_tokens(
    uid: str,
    *,
    subject: SubjectLike | None = None,
    user: str | None = None,
    all_tokens: bool = False,
) -> RevokeResult:
    """Revoke one subject's tokens for connector ``uid``, or every subject's."""
    return await default_async_client().revoke_tokens(
        uid, subject=subject, user=user, all_tokens=all_tokens
    )


async def get_connector(uid: str) -> ConnectorMetadata:
    """Connector ``uid``'s public description."""
    return await default_async_client().get_connector(uid)
