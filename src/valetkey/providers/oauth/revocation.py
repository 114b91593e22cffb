"""Token revocation, RFC 7009.

§2.1 with ``token_type_hint``; skipped (not failed) when the server has no revocation
endpoint. The provider's answer never raises: §2.2's 200 means the token is no longer valid.
"""

from __future__ import annotations

from typing import Literal

from valetkey.core.models import Connector
from valetkey.core.providers import MintedToken, RevokeResult
from valetkey.errors import InvalidRequest
from valetkey.providers.context import HttpContext
from valetkey.providers.oauth.client import revoke_token
from valetkey.providers.oauth.engine import OAuthEngine
from valetkey.providers.oauth.settings import OAuthSettings

__all__ = ["Revocation"]


class Revocation(OAuthEngine):
    """RFC 7009 §2.1: revoke an access or refresh token the connector's client holds."""

    async def revoke(
        self, ctx: HttpContext, connector: Connector, token: MintedToken
    ) -> RevokeResult:
        """Revoke an access token at the RFC 7009 endpoint; skipped when there is none."""
        return await self.revoke_user_token(ctx, connector, token=token.token, hint="access_token")

    async def revoke_user_token(
        self, ctx: HttpContext, connector: Connector, *, token: str, hint: str
    ) -> RevokeResult:
        """RFC 7009 with ``token_type_hint``; skipped when the server has no revocation endpoint."""
        if hint not in ("access_token", "refresh_token"):
            raise InvalidRequest("hint must be access_token or refresh_token", field="hint")
        settings = OAuthSettings.from_connector(connector)
        discover = settings.revocation_url is None and settings.issuer is not None
        endpoints = await self._endpoints(
            ctx, settings, discover=discover or settings.token_url is None
        )
        if endpoints.revocation is None:
            return RevokeResult(revoked=False, skipped=True)
        type_hint: Literal["access_token", "refresh_token"] = (
            "refresh_token" if hint == "refresh_token" else "access_token"
        )
        outcome = await revoke_token(
            ctx.http,
            endpoints.revocation,
            self._client_auth(settings, endpoints, ctx),
            token,
            type_hint,
            dialect=self.dialect,
        )
        return RevokeResult(revoked=outcome.revoked, error=outcome.error)
