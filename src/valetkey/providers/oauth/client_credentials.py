"""The client credentials grant, RFC 6749 §4.4: the ``app`` subject.

The request is narrowed to exactly what the caller asked for: scopes (§3.3), RFC 8707
resources and, through the connector's ``audienceParam``, an audience. A provider that
grants more scopes than were asked is refused (and the token revoked where it can be).
"""

from __future__ import annotations

from valetkey.core.models import TokenRequest
from valetkey.core.providers import MintedToken
from valetkey.errors import UnsupportedOperation
from valetkey.providers.context import HttpContext
from valetkey.providers.oauth.engine import OAuthEngine, require_grant
from valetkey.providers.oauth.settings import OAuthSettings

__all__ = ["ClientCredentialsGrant"]


class ClientCredentialsGrant(OAuthEngine):
    """RFC 6749 §4.4.2: ``grant_type=client_credentials`` at the token endpoint."""

    GRANT_TYPE = "client_credentials"

    async def client_credentials(
        self, ctx: HttpContext, settings: OAuthSettings, request: TokenRequest
    ) -> MintedToken:
        """An ``app`` token for exactly the request's scopes, resources and audience."""
        subject = request.subject
        if subject.type != "app":
            raise UnsupportedOperation(
                f"oauth connectors do not mint {subject.type!r} tokens directly; "
                "they come from a user's stored grant or a token exchange",
                subject=subject.type,
            )
        require_grant(settings, "client_credentials", "app")
        endpoints = await self._endpoints(ctx, settings, discover=settings.token_url is None)
        requested = settings.scopes if request.scopes is None else request.scopes
        params: dict[str, str | tuple[str, ...]] = {
            "grant_type": "client_credentials",
            **settings.token_params,
        }
        if requested:
            params["scope"] = settings.scope_separator.join(requested)
        if request.resources:
            params["resource"] = request.resources
        if request.audience is not None:
            if settings.audience_param is None:
                raise UnsupportedOperation(
                    "this oauth connector has no audienceParam: it cannot narrow by audience",
                    field="audience",
                )
            params[settings.audience_param] = request.audience
        response = await self._request_narrowed(ctx, settings, endpoints, params, requested)
        granted = requested if response.scopes is None else response.scopes
        return MintedToken(
            token=response.access_token,
            expires_at=response.expires_at(ctx.clock),
            scopes=tuple(granted) if granted or request.scopes is not None else None,
            token_type=response.token_type,
            scope_stated=response.scopes is not None,
        )
