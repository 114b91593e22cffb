"""Provider tokens on outgoing requests: an ``httpx2.Auth`` that asks the broker for each call.

    import httpx2, valetkey

    auth = valetkey.TokenAuth("github/deploy-bot", scopes=["contents:read"])
    async with httpx2.AsyncClient(auth=auth) as github:
        await github.get("https://api.github.com/repos/acme/app")

The token comes from the SDK's cache, so most requests do no broker call. A ``401`` from
the provider means the token it was given no longer works (revoked, or expired early):
the request is sent once more with a freshly minted token, never more.

:class:`TokenFlow` holds what does not depend on the HTTP library; ``valetkey[httpx2]``
has the same adapter for httpx2 (:mod:`valetkey.sdk.httpx_auth`).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator, Iterable
from typing import Any, Protocol

import httpx2

from valetkey.sdk.client import AsyncClient, Client
from valetkey.sdk.types import SubjectLike

__all__ = ["TokenAuth", "TokenFlow"]

_UNAUTHORIZED = 401


class _Request(Protocol):
    """What the flow touches on a request: httpx2's and httpx2's both have it."""

    @property
    def headers(self) -> Any: ...


class _Response(Protocol):
    @property
    def status_code(self) -> int: ...


class TokenFlow:
    """One connector's token on every request, for either HTTP library's ``Auth`` protocol.

    ``client`` is the :class:`~valetkey.Client` (sync requests) or
    :class:`~valetkey.AsyncClient` (async requests) to ask; without it the module-level
    default clients are used, configured from the environment. The token goes into
    ``header`` as ``"<scheme> <token>"`` (``scheme=""`` for the bare token, as some API-key
    providers want). ``retry_on_401=False`` sends a request once whatever the answer.
    """

    requires_request_body = True  # a retried request is sent again, body and all

    def __init__(
        self,
        uid: str,
        *,
        client: Client | AsyncClient | None = None,
        subject: SubjectLike | None = None,
        user: str | None = None,
        scopes: str | Iterable[str] | None = None,
        installation_id: str | None = None,
        resources: str | Iterable[str] | None = None,
        audience: str | None = None,
        header: str = "Authorization",
        scheme: str = "Bearer",
        retry_on_401: bool = True,
    ) -> None:
        self._uid = uid
        self._client = client
        self._params: dict[str, Any] = {
            "subject": subject,
            "user": user,
            "scopes": scopes,
            "installation_id": installation_id,
            "resources": resources,
            "audience": audience,
        }
        self._header = header
        self._scheme = scheme
        self._retry = retry_on_401

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._uid!r})"

    def _sync_client(self) -> Client:
        if self._client is None:
            from valetkey.sdk.default import default_client

            return default_client()
        if not isinstance(self._client, Client):
            raise TypeError(
                f"{type(self).__name__} was given an AsyncClient but is used by a synchronous "
                "HTTP client: pass a valetkey.Client (or none, for the default)"
            )
        return self._client

    def _async_client(self) -> AsyncClient:
        if self._client is None:
            from valetkey.sdk.default import default_async_client

            return default_async_client()
        if not isinstance(self._client, AsyncClient):
            raise TypeError(
                f"{type(self).__name__} was given a Client but is used by an asynchronous "
                "HTTP client: pass a valetkey.AsyncClient (or none, for the default)"
            )
        return self._client

    def _authorize(self, request: _Request, token: str) -> None:
        request.headers[self._header] = f"{self._scheme} {token}" if self._scheme else token

    def _flow(self, request: Any) -> Generator[Any, Any, None]:
        client = self._sync_client()
        self._authorize(request, client.get_token(self._uid, **self._params))
        response: _Response = yield request
        if self._retry and response.status_code == _UNAUTHORIZED:
            self._authorize(request, client.get_token(self._uid, **self._params, force_refresh=True))
            yield request

    async def _async_flow(self, request: Any) -> AsyncGenerator[Any, Any]:
        client = self._async_client()
        self._authorize(request, await client.get_token(self._uid, **self._params))
        response: _Response = yield request
        if self._retry and response.status_code == _UNAUTHORIZED:
            token = await client.get_token(self._uid, **self._params, force_refresh=True)
            self._authorize(request, token)
            yield request


class TokenAuth(TokenFlow, httpx2.Auth):
    """``auth=`` for ``httpx2.Client`` / ``httpx2.AsyncClient``: see :class:`TokenFlow`."""

    def sync_auth_flow(
        self, request: httpx2.Request
    ) -> Generator[httpx2.Request, httpx2.Response, None]:
        return self._flow(request)

    def async_auth_flow(
        self, request: httpx2.Request
    ) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        return self._async_flow(request)
