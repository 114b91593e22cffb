"""The JWT bearer authorization grant, RFC 7523 §2.1 (the profile of RFC 7521 §4.1).

The assertion is signed with the connector's ``privateKey``; ``iss`` defaults to the client
id and ``aud`` to the token endpoint. Scopes wider than asked are refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from valetkey.core.models import Connector
from valetkey.core.providers import TokenSet
from valetkey.errors import InvalidRequest, UnsupportedOperation
from valetkey.providers.context import HttpContext
from valetkey.providers.oauth.engine import OAuthEngine, join_scopes, require_grant
from valetkey.providers.oauth.settings import OAuthSettings
from valetkey.providers.signing import authorization_grant

__all__ = ["JWT_BEARER_GRANT", "JwtBearerGrant"]

JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"


class JwtBearerGrant(OAuthEngine):
    """RFC 7523 §2.1: ``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer``."""

    GRANT_TYPE = JWT_BEARER_GRANT

    async def jwt_bearer(
        self,
        ctx: HttpContext,
        connector: Connector,
        *,
        subject: str,
        issuer: str | None,
        audience: str | None,
        claims: Mapping[str, Any],
        scopes: tuple[str, ...] | None,
    ) -> TokenSet:
        """RFC 7523 §2.1 with an assertion signed by ``privateKey``.

        ``iss`` defaults to the client id, ``aud`` to the token endpoint; the assertion
        lives two minutes and has a fresh ``jti``. Scopes wider than asked are refused.
        """
        settings = OAuthSettings.from_connector(connector)
        require_grant(settings, "jwt_bearer", "jwt-bearer")
        key = settings.signing_key
        if key is None:  # parse() already refuses this; kept for a clear message
            raise UnsupportedOperation("the jwt_bearer grant needs privateKey", field="privateKey")
        if not subject:
            raise InvalidRequest("a jwt-bearer subject needs an id", field="subject")
        endpoints = await self._endpoints(ctx, settings, discover=settings.token_url is None)
        assertion = authorization_grant(
            key,
            ctx.clock,
            issuer=issuer or settings.client_id,
            subject=subject,
            audience=audience or endpoints.token,
            claims=claims,
        )
        requested = settings.scopes if scopes is None else scopes
        params: dict[str, str | tuple[str, ...]] = {
            **settings.token_params,
            "grant_type": JWT_BEARER_GRANT,
            "assertion": assertion,
        }
        if requested:
            params["scope"] = join_scopes(requested, settings.scope_separator)
        response = await self._request_narrowed(ctx, settings, endpoints, params, requested)
        return await self._token_set(
            ctx,
            settings,
            endpoints,
            response,
            requested=requested,
            nonce=None,
            id_token_required=False,
        )
