"""The ``oauth`` provider: the grant modules combined behind the core's provider contract."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from valetkey.core.models import Connector, TokenRequest
from valetkey.core.providers import (
    Capabilities,
    ConfigField,
    MintedToken,
    UserFlows,
    ValidatedConfig,
)
from valetkey.errors import InvalidRequest
from valetkey.providers.context import HttpContext
from valetkey.providers.oauth.authorization_code import AuthorizationCodeGrant
from valetkey.providers.oauth.client_credentials import ClientCredentialsGrant
from valetkey.providers.oauth.device import DeviceGrant
from valetkey.providers.oauth.jwt_bearer import JwtBearerGrant
from valetkey.providers.oauth.refresh import RefreshGrant
from valetkey.providers.oauth.revocation import Revocation
from valetkey.providers.oauth.settings import FIELDS as SETTINGS_FIELDS
from valetkey.providers.oauth.settings import OAuthSettings
from valetkey.providers.oauth.token_exchange import TokenExchangeGrant

__all__ = ["OAuthProvider"]


class OAuthProvider(
    ClientCredentialsGrant,
    AuthorizationCodeGrant,
    RefreshGrant,
    DeviceGrant,
    JwtBearerGrant,
    TokenExchangeGrant,
    Revocation,
):
    """Generic OAuth 2.0 / OIDC: app, user, jwt-bearer and token subjects, per ``grants``."""

    type: ClassVar[str] = "oauth"
    services: ClassVar[tuple[str, ...]] = ("oauth",)
    config_fields: ClassVar[tuple[ConfigField, ...]] = SETTINGS_FIELDS

    def capabilities(self, connector: Connector) -> Capabilities:
        """Subjects follow ``grants``; revocation is expected with a revocation URL or an issuer."""
        settings = OAuthSettings.from_connector(connector)
        return Capabilities(
            subjects=settings.subjects,
            scopable=True,
            short_lived=True,
            revocation=bool(settings.revocation_url or settings.issuer),
        )

    def validate_config(
        self, data: Mapping[str, Any], previous: ValidatedConfig | None = None
    ) -> ValidatedConfig:
        """Check the whole configuration; secrets left out on update are kept."""
        return OAuthSettings.parse(data, previous).to_validated()

    def user_flows(self) -> UserFlows:
        """Every user grant; a connector enables each in ``grants`` (else ``UnsupportedOperation``)."""
        return UserFlows(
            authorization_code=self,
            device=self,
            refresh=self,
            assertion=self,
            exchange=self,
            revocation=self,
        )

    async def mint(
        self, ctx: HttpContext, connector: Connector, request: TokenRequest
    ) -> MintedToken:
        """``app``: client credentials for exactly the request; ``jwt-bearer``: an RFC 7523 grant.

        ``user`` and ``token`` subjects go through the user flows (a stored grant, an
        exchange), not through ``mint``.
        """
        settings = OAuthSettings.from_connector(connector)
        subject = request.subject
        if subject.type == "jwt-bearer":
            if subject.id is None:
                raise InvalidRequest("a jwt-bearer subject needs an id", field="subject")
            tokens = await self.jwt_bearer(
                ctx,
                connector,
                subject=subject.id,
                issuer=None,
                audience=None,
                claims={},
                scopes=request.scopes,
            )
            return MintedToken(
                token=tokens.access_token,
                expires_at=tokens.expires_at,
                scopes=tokens.scopes,
                token_type=tokens.token_type,
                scope_stated=tokens.scope_stated,
            )
        return await self.client_credentials(ctx, settings, request)
