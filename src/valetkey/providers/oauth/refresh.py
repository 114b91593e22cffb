"""Refreshing an access token, RFC 6749 §6, with rotation.

A narrowed refresh asks for fewer scopes (§6: never more than originally granted). When the
server rotates the refresh token the new one is kept; otherwise the one given stays valid.
"""

from __future__ import annotations

from valetkey.core.models import Connector
from valetkey.core.providers import TokenSet
from valetkey.errors import ProviderError
from valetkey.providers.context import HttpContext
from valetkey.providers.oauth.engine import OAuthEngine, invalid_grant, join_scopes
from valetkey.providers.oauth.settings import OAuthSettings

__all__ = ["RefreshGrant"]


class RefreshGrant(OAuthEngine):
    """RFC 6749 §6: ``grant_type=refresh_token``."""

    GRANT_TYPE = "refresh_token"

    async def refresh(
        self,
        ctx: HttpContext,
        connector: Connector,
        *,
        refresh_token: str,
        scopes: tuple[str, ...] | None = None,
        resources: tuple[str, ...] | None = None,
    ) -> TokenSet:
        """RFC 6749 §6, optionally narrowed. ``invalid_grant`` raises :class:`InvalidGrant`.

        The returned ``refresh_token`` is the one to keep: the rotated one when the server
        issued a new one, else the one given (unchanged).
        """
        settings = OAuthSettings.from_connector(connector)
        endpoints = await self._endpoints(ctx, settings)
        params: dict[str, str | tuple[str, ...]] = {
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
        }
        if scopes:
            params["scope"] = join_scopes(scopes, settings.scope_separator)
        if resources:
            params["resource"] = resources
        try:
            response = await self._request_token(ctx, settings, endpoints, params)
        except ProviderError as exc:
            raise invalid_grant(exc, "the provider no longer accepts the refresh token") from exc
        tokens = await self._token_set(
            ctx,
            settings,
            endpoints,
            response,
            requested=scopes,
            nonce=None,
            id_token_required=False,
        )
        if tokens.refresh_token is None:
            return _replace_refresh(tokens, refresh_token)
        return tokens


def _replace_refresh(tokens: TokenSet, refresh_token: str) -> TokenSet:
    return TokenSet(
        access_token=tokens.access_token,
        expires_at=tokens.expires_at,
        refresh_token=refresh_token,
        scopes=tokens.scopes,
        token_type=tokens.token_type,
        provider_subject=tokens.provider_subject,
        id_claims=tokens.id_claims,
        extra=tokens.extra,
    )
