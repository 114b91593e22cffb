"""The provider-token adapter for apps that still use httpx (``pip install 'valetkey[httpx]'``).

    import httpx
    from valetkey.sdk.httpx_auth import HttpxTokenAuth

    with httpx.Client(auth=HttpxTokenAuth("github/deploy-bot")) as github: ...

The same flow as :class:`valetkey.TokenAuth` (httpx2): the SDK itself still talks to the
broker over httpx2; only this adapter imports httpx, and only when it is used.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator

try:
    import httpx
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "valetkey's httpx adapter needs httpx: pip install 'valetkey[httpx]' "
        "(or use valetkey.TokenAuth with httpx2)"
    ) from exc

from valetkey.sdk.auth import TokenFlow

__all__ = ["HttpxTokenAuth"]


class HttpxTokenAuth(TokenFlow, httpx.Auth):
    """``auth=`` for ``httpx.Client`` / ``httpx.AsyncClient``: see :class:`valetkey.sdk.auth.TokenFlow`."""

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        return self._flow(request)

    def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        return self._async_flow(request)
