"""OAuth 2.0 token exchange at the provider, RFC 8693.

§2.1 the request (a subject token and its type URI, optional audience, resources, scopes);
§2.2.1 the response must name its ``issued_token_type``. A refused subject token
(``invalid_grant``) is :class:`~valetkey.errors.InvalidGrant`.
"""

from __future__ import annotations

from valetkey.core.models import Connector
from valetkey.core.providers import TokenSet
from valetkey.errors import InvalidRequest, ProviderError
from valetkey.providers.context import HttpContext
from valetkey.providers.oauth.engine import OAuthEngine, invalid_grant, join_scopes, require_grant
from valetkey.providers.oauth.settings import OAuthSettings

__all__ = ["TOKEN_EXCHANGE_GRANT", "TokenExchangeGrant"]

TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105 - a URN
_MAX_TOKEN_TYPE = 256


class TokenExchangeGrant(OAuthEngine):
    """RFC 8693 §2.1: ``grant_type=urn:ietf:params:oauth:grant-type:token-exchange``."""

    GRANT_TYPE = TOKEN_EXCHANGE_GRANT

    async def token_exchange(
        self,
        ctx: HttpContext,
        connector: Connector,
        *,
        subject_token: str,
        subject_token_type: str,
        scopes: tuple[str, ...] | None,
        audience: str | None,
        resources: tuple[str, ...] | None,
    ) -> TokenSet:
        """RFC 8693 §2.1; ``issued_token_type`` (§2.2.1, required) is in ``extra``.

        ``invalid_grant`` (the subject token is refused) raises :class:`InvalidGrant`;
        scopes wider than asked are refused.
        """
        settings = OAuthSettings.from_connector(connector)
        require_grant(settings, "token_exchange", "token")
        if not subject_token:
            raise InvalidRequest("subject_token must not be empty", field="subjectToken")
        if (
            not subject_token_type
            or len(subject_token_type) > _MAX_TOKEN_TYPE
            or (":" not in subject_token_type)
        ):
            raise InvalidRequest(
                "subject_token_type must be a token type URI (RFC 8693 §3)",
                field="subjectTokenType",
            )
        endpoints = await self._endpoints(ctx, settings, discover=settings.token_url is None)
        params: dict[str, str | tuple[str, ...]] = {
            **settings.token_params,
            "grant_type": TOKEN_EXCHANGE_GRANT,
            "subject_token": subject_token,
            "subject_token_type": subject_token_type,
        }
        if scopes:
            params["scope"] = join_scopes(scopes, settings.scope_separator)
        if audience is not None:
            params["audience"] = audience
        if resources:
            params["resource"] = resources
        auth = self._client_auth(settings, endpoints, ctx)
        try:
            response = await self._request_token(ctx, settings, endpoints, params, auth)
        except ProviderError as exc:
            raise invalid_grant(exc, "the provider refused the subject token") from exc
        issued = response.extra.get("issued_token_type")
        if not isinstance(issued, str) or not issued:
            raise ProviderError(
                "the token exchange response has no issued_token_type (RFC 8693 §2.2.1)",
                error="invalid_response",
            )
        if scopes is not None and response.scopes is not None:
            await self._refuse_widened(ctx, endpoints, auth, response, response.scopes, scopes)
        return await self._token_set(
            ctx,
            settings,
            endpoints,
            response,
            requested=scopes,
            nonce=None,
            id_token_required=False,
        )
