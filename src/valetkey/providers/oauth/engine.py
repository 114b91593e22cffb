"""What every grant shares: the connector's endpoints, client authentication, the token set.

A grant module (one per RFC grant, beside this one) builds its form parameters and calls the
token endpoint through :mod:`valetkey.providers.oauth.client`; this module resolves where that
endpoint is (configured values over RFC 8414 / OpenID discovery), how the client authenticates
(RFC 6749 §2.3.1, RFC 7523 §2.2), refuses a response wider than the request, and turns a
token response into the core's :class:`~valetkey.core.providers.TokenSet` (verifying an
OpenID Connect ID token when there is one).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from valetkey.core.models import Connector, SubjectType
from valetkey.core.providers import TokenSet
from valetkey.errors import InvalidGrant, InvalidRequest, ProviderError, UnsupportedOperation
from valetkey.providers.context import HttpContext
from valetkey.providers.oauth.client import ClientAuth, TokenResponse, request_token, revoke_token
from valetkey.providers.oauth.dialect import DEFAULT_DIALECT, Dialect
from valetkey.providers.oauth.discovery import DEFAULT_TTL_SECONDS, MetadataCache, ServerMetadata
from valetkey.providers.oauth.id_token import JwksStore, verify_id_token
from valetkey.providers.oauth.settings import Grant, OAuthSettings
from valetkey.providers.signing import client_assertion

__all__ = ["Endpoints", "OAuthEngine", "invalid_grant", "join_scopes", "require_grant"]


@dataclass(frozen=True, slots=True)
class Endpoints:
    """A connector's endpoints: configured values over discovered ones."""

    token: str
    issuer: str | None = None
    authorization: str | None = None
    device_authorization: str | None = None
    revocation: str | None = None
    jwks_uri: str | None = None
    code_challenge_methods: tuple[str, ...] | None = None
    id_token_algorithms: tuple[str, ...] | None = None

    @classmethod
    def resolve(cls, settings: OAuthSettings, metadata: ServerMetadata | None) -> Endpoints:
        def pick(configured: str | None, discovered: str | None) -> str | None:
            return configured if configured is not None else discovered

        m = metadata
        token = pick(settings.token_url, m.token_endpoint if m else None)
        if token is None:
            raise ProviderError(
                f"issuer {settings.issuer} publishes no token_endpoint and no tokenUrl is set",
                error="invalid_metadata",
            )
        return cls(
            token=token,
            issuer=settings.issuer,
            authorization=pick(settings.authorization_url, m.authorization_endpoint if m else None),
            device_authorization=pick(
                settings.device_authorization_url, m.device_authorization_endpoint if m else None
            ),
            revocation=pick(settings.revocation_url, m.revocation_endpoint if m else None),
            jwks_uri=pick(settings.jwks_uri, m.jwks_uri if m else None),
            code_challenge_methods=m.code_challenge_methods_supported if m else None,
            id_token_algorithms=m.id_token_signing_alg_values_supported if m else None,
        )

    def is_oidc(self, scopes: Sequence[str]) -> bool:
        """OpenID Connect applies: ``openid`` is asked for and ID tokens can be verified."""
        return "openid" in scopes and self.issuer is not None and self.jwks_uri is not None


class OAuthEngine:
    """The state and steps the grant modules share; :class:`OAuthProvider` combines them."""

    def __init__(
        self,
        *,
        metadata_ttl_seconds: float = DEFAULT_TTL_SECONDS,
        dialect: Dialect = DEFAULT_DIALECT,
    ) -> None:
        self._metadata = MetadataCache(metadata_ttl_seconds)
        self._jwks = JwksStore()
        #: How this provider's server departs from the RFCs (client auth, refusals, fields).
        self.dialect = dialect

    async def endpoints(self, ctx: HttpContext, connector: Connector) -> Endpoints:
        """The connector's endpoints, discovering them from its issuer when it has one."""
        return await self._endpoints(ctx, OAuthSettings.from_connector(connector))

    async def _endpoints(
        self, ctx: HttpContext, settings: OAuthSettings, *, discover: bool = True
    ) -> Endpoints:
        metadata = None
        if settings.issuer is not None and discover:
            metadata = await self._metadata.get(ctx.http, ctx.clock, settings.issuer)
        return Endpoints.resolve(settings, metadata)

    def _client_auth(
        self, settings: OAuthSettings, endpoints: Endpoints, ctx: HttpContext
    ) -> ClientAuth:
        method = self.dialect.method_for(settings.auth_method)
        if method != "private_key_jwt":
            return ClientAuth(settings.client_id, settings.client_secret or "", method)
        key = settings.signing_key
        if key is None:
            raise ProviderError("private_key_jwt needs privateKey", error="invalid_configuration")
        clock, client_id, audience = ctx.clock, settings.client_id, endpoints.token

        def assertion() -> str:
            return client_assertion(key, clock, client_id=client_id, audience=audience)

        return ClientAuth(client_id, method="private_key_jwt", assertion=assertion)

    async def _request_token(
        self,
        ctx: HttpContext,
        settings: OAuthSettings,
        endpoints: Endpoints,
        params: Mapping[str, str | tuple[str, ...]],
        auth: ClientAuth | None = None,
    ) -> TokenResponse:
        """POST a grant's ``params`` to the token endpoint, authenticated, read in this dialect."""
        return await request_token(
            ctx.http,
            endpoints.token,
            auth or self._client_auth(settings, endpoints, ctx),
            params,
            scope_separator=settings.scope_separator,
            dialect=self.dialect,
        )

    async def _request_narrowed(
        self,
        ctx: HttpContext,
        settings: OAuthSettings,
        endpoints: Endpoints,
        params: Mapping[str, str | tuple[str, ...]],
        requested: Sequence[str],
    ) -> TokenResponse:
        """As :meth:`_request_token`; a token with scopes beyond ``requested`` is revoked and refused.

        A response without ``scope`` was granted as requested (RFC 6749 §5.1).
        """
        auth = self._client_auth(settings, endpoints, ctx)
        response = await self._request_token(ctx, settings, endpoints, params, auth)
        granted = requested if response.scopes is None else response.scopes
        await self._refuse_widened(ctx, endpoints, auth, response, granted, requested)
        return response

    async def _refuse_widened(
        self,
        ctx: HttpContext,
        endpoints: Endpoints,
        auth: ClientAuth,
        response: TokenResponse,
        granted: Sequence[str],
        requested: Sequence[str],
    ) -> None:
        widened = sorted(set(granted) - set(requested))
        if not widened:
            return
        # DESIGN §9: never hand out more than was asked for; withdraw the token if we can.
        if endpoints.revocation is not None:
            await revoke_token(
                ctx.http,
                endpoints.revocation,
                auth,
                response.access_token,
                "access_token",
                dialect=self.dialect,
            )
        raise ProviderError(
            "the provider granted scopes that were not requested (widened); the token was not used",
            error="scope_widened",
            widened=widened,
        )

    async def _token_set(
        self,
        ctx: HttpContext,
        settings: OAuthSettings,
        endpoints: Endpoints,
        response: TokenResponse,
        *,
        requested: Sequence[str] | None,
        nonce: str | None,
        id_token_required: bool,
    ) -> TokenSet:
        extra = dict(response.extra)
        id_token = extra.pop("id_token", None)
        claims: dict[str, Any] = {}
        if id_token is not None and not isinstance(id_token, str):
            raise ProviderError(
                "the token response has a malformed id_token", error="invalid_response"
            )
        issuer, jwks_uri = endpoints.issuer, endpoints.jwks_uri
        if id_token and issuer is not None and jwks_uri is not None:
            claims = await verify_id_token(
                id_token,
                http=ctx.http,
                clock=ctx.clock,
                store=self._jwks,
                issuer=issuer,
                client_id=settings.client_id,
                jwks_uri=jwks_uri,
                nonce=nonce,
                algorithms=endpoints.id_token_algorithms,
            )
        elif id_token_required:
            raise ProviderError(
                "the provider returned no ID token to an OpenID Connect authorization request",
                error="invalid_id_token",
            )
        scopes = response.scopes
        if scopes is None and requested:
            scopes = tuple(requested)  # RFC 6749 §5.1: omitted means as requested
        return TokenSet(
            access_token=response.access_token,
            expires_at=response.expires_at(ctx.clock),
            refresh_token=response.refresh_token,
            scopes=scopes,
            token_type=response.token_type,
            provider_subject=claims.get("sub") if claims else None,
            id_claims=claims,
            extra=extra,
            scope_stated=response.scopes is not None,
        )


def require_grant(settings: OAuthSettings, grant: Grant, subject: SubjectType) -> None:
    if grant not in settings.grants:
        raise UnsupportedOperation(
            f"this oauth connector does not enable the {grant} grant, needed for the "
            f"{subject!r} subject (enabled: {', '.join(settings.grants)}); add it to grants",
            grant=grant,
            subject=subject,
        )


def join_scopes(scopes: Sequence[str], separator: str) -> str:
    for scope in scopes:
        if not scope or separator in scope or " " in scope:
            raise InvalidRequest("each scope must be a non-empty scope token", field="scopes")
    return separator.join(scopes)


def invalid_grant(exc: ProviderError, message: str) -> Exception:
    if exc.details.get("error") != "invalid_grant":
        return exc
    details = {k: v for k, v in exc.details.items() if k != "error"}
    return InvalidGrant(message, providerError="invalid_grant", **details)
