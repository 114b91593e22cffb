"""The generic ``oauth`` provider: any OAuth 2.0 / OpenID Connect authorization server.

Subjects, each behind a grant the connector enables in ``grants``:

- ``app``: client credentials (RFC 6749 §4.4), narrowed per request to scopes, RFC 8707
  resources and an audience; a provider that grants more than was asked is refused.
- ``user``: authorization code with PKCE S256 always (RFC 6749 §4.1, RFC 7636), OpenID
  Connect ID tokens verified (nonce, signature, iss, aud, exp); the device authorization
  grant (RFC 8628); refresh with rotation (RFC 6749 §6).
- ``jwt-bearer``: an RFC 7523 §2.1 assertion signed with the connector's private key.
- ``token``: RFC 8693 token exchange at the provider.

Revocation through RFC 7009 whenever the server has a revocation endpoint.

Configuration (``secret``: stored encrypted, never shown)::

    issuer                  discover endpoints from this issuer: RFC 8414
                            (/.well-known/oauth-authorization-server, inserted before a
                            path) then OpenID Connect (/.well-known/openid-configuration,
                            appended); the document's issuer must match exactly
    tokenUrl                token endpoint (required without issuer; overrides discovery)
    authorizationUrl        authorization endpoint (overrides discovery)
    deviceAuthorizationUrl  RFC 8628 endpoint (overrides discovery)
    revocationUrl           RFC 7009 endpoint (overrides discovery; without any, skipped)
    jwksUri                 the issuer's keys for ID tokens (overrides discovery; needs issuer)
    clientId                the client's id
    clientSecret            secret; required for client_secret_basic / client_secret_post
    privateKey              secret; PEM, RSA ≥ 2048 (RS256) or EC P-256 (ES256); signs
                            private_key_jwt client assertions and jwt_bearer grants
    privateKeyId            the key's ``kid`` (optional)
    authMethod              "client_secret_basic" (default) | "client_secret_post"
                            | "private_key_jwt"
    grants                  enabled grants, from "client_credentials", "authorization_code",
                            "device_code", "jwt_bearer", "token_exchange";
                            default ["client_credentials"] (subject app only)
    scopes                  the connector's scope ceiling, a list (default: none)
    userScopes              scopes asked for in consent when a request names none
                            (default: scopes)
    scopeSeparator          " " (default) | ","
    authorizationParams     extra authorization-request parameters, {name: value}
                            (never response_type, client_id, redirect_uri, state, scope,
                            nonce, resource, login_hint, code_challenge*, request*)
    tokenParams             extra token-request parameters for client_credentials,
                            jwt_bearer and token_exchange, e.g. {"audience": "..."}
    audienceParam           name of the token parameter carrying a request's ``audience``
                            (client credentials; without it, an audience is refused)
    description             free text

Discovered metadata is cached in the provider instance per issuer (one hour); ID token
keys per ``jwks_uri``. Every URL, configured or discovered, must be https (http only
for localhost, 127.0.0.1 and [::1]).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar, Literal
from urllib.parse import urlencode, urlsplit, urlunsplit

from valetkey.core.models import Connector, SubjectType, TokenRequest
from valetkey.core.providers import (
    AuthorizationStart,
    Capabilities,
    DeviceStart,
    MintedToken,
    RevokeResult,
    TokenSet,
    UserFlows,
    ValidatedConfig,
)
from valetkey.errors import (
    AccessDenied,
    AuthorizationExpired,
    AuthorizationPending,
    InvalidGrant,
    InvalidRequest,
    ProviderError,
    UnsupportedOperation,
)
from valetkey.providers.config import check_url
from valetkey.providers.context import HttpContext
from valetkey.providers.discovery import DEFAULT_TTL_SECONDS, MetadataCache, ServerMetadata
from valetkey.providers.id_token import JwksStore, verify_id_token
from valetkey.providers.oauth_client import (
    ClientAuth,
    TokenResponse,
    post_form,
    request_token,
    revoke_token,
)
from valetkey.providers.oauth_settings import Grant, OAuthSettings
from valetkey.providers.signing import authorization_grant, client_assertion

__all__ = [
    "DEVICE_CODE_GRANT",
    "JWT_BEARER_GRANT",
    "TOKEN_EXCHANGE_GRANT",
    "Endpoints",
    "OAuthProvider",
    "OAuthSettings",
    "pkce_challenge",
]

JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105 - a URN
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
#: RFC 8628 §3.5: each ``slow_down`` adds 5 seconds to the polling interval.
SLOW_DOWN_SECONDS = 5
_DEFAULT_DEVICE_INTERVAL = 5
#: A device code's lifetime is believed up to a day; a longer ``expires_in`` is cut to it.
_MAX_DEVICE_LIFETIME = 24 * 3600
#: A polling interval above an hour is not a real one (and would overflow a date if huge).
_MAX_DEVICE_INTERVAL = 3600
_MAX_TOKEN_TYPE = 256


def pkce_challenge(verifier: str) -> str:
    """RFC 7636 §4.2 S256: BASE64URL(SHA256(ASCII(code_verifier))), without padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


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


class OAuthProvider:
    """Generic OAuth 2.0 / OIDC: app, user, jwt-bearer and token subjects, per ``grants``."""

    type: ClassVar[str] = "oauth"
    services: ClassVar[tuple[str, ...]] = ("oauth",)

    def __init__(self, *, metadata_ttl_seconds: float = DEFAULT_TTL_SECONDS) -> None:
        self._metadata = MetadataCache(metadata_ttl_seconds)
        self._jwks = JwksStore()

    # -- the Provider interface -------------------------------------------------------

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

    async def endpoints(self, ctx: HttpContext, connector: Connector) -> Endpoints:
        """The connector's endpoints, discovering them from its issuer when it has one."""
        return await self._endpoints(ctx, OAuthSettings.from_connector(connector))

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
        if subject.type != "app":
            raise UnsupportedOperation(
                f"oauth connectors do not mint {subject.type!r} tokens directly; "
                "they come from a user's stored grant or a token exchange",
                subject=subject.type,
            )
        _require(settings, "client_credentials", "app")
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
        auth = self._client_auth(settings, endpoints, ctx)
        response = await request_token(
            ctx.http, endpoints.token, auth, params, scope_separator=settings.scope_separator
        )
        granted = requested if response.scopes is None else response.scopes
        await self._refuse_widened(ctx, endpoints, auth, response, granted, requested)
        return MintedToken(
            token=response.access_token,
            expires_at=response.expires_at(ctx.clock),
            scopes=tuple(granted) if granted or request.scopes is not None else None,
            token_type=response.token_type,
            scope_stated=response.scopes is not None,
        )

    async def revoke(
        self, ctx: HttpContext, connector: Connector, token: MintedToken
    ) -> RevokeResult:
        """Revoke an access token at the RFC 7009 endpoint; skipped when there is none."""
        return await self.revoke_user_token(ctx, connector, token=token.token, hint="access_token")

    # -- user flows ---------------------------------------------------------------------

    async def start_authorization(
        self,
        ctx: HttpContext,
        connector: Connector,
        *,
        redirect_uri: str,
        state: str,
        scopes: tuple[str, ...] | None,
        resources: tuple[str, ...] | None = None,
        login_hint: str | None = None,
        prompt: str | None = None,
    ) -> AuthorizationStart:
        """Build an authorization-code request with PKCE S256, and a nonce for OpenID Connect."""
        settings = OAuthSettings.from_connector(connector)
        _require(settings, "authorization_code", "user")
        check_url(redirect_uri, "redirect_uri")
        if not state:
            raise InvalidRequest("state must be a non-empty string", field="state")
        endpoints = await self._endpoints(ctx, settings)
        if endpoints.authorization is None:
            raise UnsupportedOperation(
                "this oauth connector has no authorization endpoint "
                "(set authorizationUrl, or an issuer that publishes one)",
                field="authorizationUrl",
            )
        methods = endpoints.code_challenge_methods
        if methods is not None and "S256" not in methods:
            raise UnsupportedOperation(
                "the authorization server does not support PKCE S256 "
                f"(code_challenge_methods_supported: {', '.join(methods) or 'none'}); "
                "Valetkey always uses S256",
                field="code_challenge_methods_supported",
            )
        requested = settings.consent_scopes if scopes is None else scopes
        verifier = secrets.token_urlsafe(64)  # 86 characters of the RFC 7636 §4.1 alphabet
        params: list[tuple[str, str]] = [
            ("response_type", "code"),
            ("client_id", settings.client_id),
            ("redirect_uri", redirect_uri),
            ("state", state),
            ("code_challenge", pkce_challenge(verifier)),
            ("code_challenge_method", "S256"),
        ]
        if requested:
            params.append(("scope", _join_scopes(requested, settings.scope_separator)))
        nonce = secrets.token_urlsafe(32) if endpoints.is_oidc(requested) else None
        if nonce is not None:
            params.append(("nonce", nonce))
        params.extend(("resource", resource) for resource in resources or ())
        if login_hint:
            params.append(("login_hint", login_hint))
        extra = settings.authorization_params
        if prompt:  # the app's prompt for this request wins over a configured default
            params.append(("prompt", prompt))
            extra = {k: v for k, v in extra.items() if k != "prompt"}
        params.extend(extra.items())
        return AuthorizationStart(
            url=_with_query(endpoints.authorization, params), code_verifier=verifier, nonce=nonce
        )

    async def exchange_code(
        self,
        ctx: HttpContext,
        connector: Connector,
        *,
        code: str,
        redirect_uri: str,
        code_verifier: str,
        nonce: str | None,
        resources: tuple[str, ...] | None = None,
    ) -> TokenSet:
        """Redeem a code (RFC 6749 §4.1.3, RFC 7636 §4.5); with a nonce an ID token is required."""
        settings = OAuthSettings.from_connector(connector)
        _require(settings, "authorization_code", "user")
        endpoints = await self._endpoints(ctx, settings)
        params: dict[str, str | tuple[str, ...]] = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": code_verifier,
        }
        if resources:
            params["resource"] = resources
        response = await request_token(
            ctx.http,
            endpoints.token,
            self._client_auth(settings, endpoints, ctx),
            params,
            scope_separator=settings.scope_separator,
        )
        return await self._token_set(
            ctx,
            settings,
            endpoints,
            response,
            requested=None,
            nonce=nonce,
            id_token_required=bool(nonce),
        )

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
            params["scope"] = _join_scopes(scopes, settings.scope_separator)
        if resources:
            params["resource"] = resources
        try:
            response = await request_token(
                ctx.http,
                endpoints.token,
                self._client_auth(settings, endpoints, ctx),
                params,
                scope_separator=settings.scope_separator,
            )
        except ProviderError as exc:
            raise _invalid_grant(exc, "the provider no longer accepts the refresh token") from exc
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

    async def start_device(
        self, ctx: HttpContext, connector: Connector, *, scopes: tuple[str, ...] | None
    ) -> DeviceStart | None:
        """RFC 8628 §3.1-3.2; None when the grant is not enabled or there is no device endpoint."""
        settings = OAuthSettings.from_connector(connector)
        if "device_code" not in settings.grants:
            return None
        endpoints = await self._endpoints(ctx, settings)
        if endpoints.device_authorization is None:
            return None
        requested = settings.consent_scopes if scopes is None else scopes
        params: dict[str, str] = {}
        if requested:
            params["scope"] = _join_scopes(requested, settings.scope_separator)
        data = await post_form(
            ctx.http,
            endpoints.device_authorization,
            self._client_auth(settings, endpoints, ctx),
            params,
            what="device authorization endpoint",
        )
        return _device_start(data, ctx)

    async def poll_device(
        self, ctx: HttpContext, connector: Connector, *, device_code: str
    ) -> TokenSet:
        """RFC 8628 §3.4-3.5: tokens, or AuthorizationPending, AccessDenied, AuthorizationExpired.

        ``slow_down`` raises ``AuthorizationPending`` with ``slowDown=True`` and
        ``intervalIncrease=5``: the caller adds 5 s to its interval from then on.
        """
        settings = OAuthSettings.from_connector(connector)
        _require(settings, "device_code", "user")
        endpoints = await self._endpoints(ctx, settings)
        params = {"grant_type": DEVICE_CODE_GRANT, "device_code": device_code}
        try:
            response = await request_token(
                ctx.http,
                endpoints.token,
                self._client_auth(settings, endpoints, ctx),
                params,
                scope_separator=settings.scope_separator,
            )
        except ProviderError as exc:
            raise _device_error(exc) from exc
        return await self._token_set(
            ctx, settings, endpoints, response, requested=None, nonce=None, id_token_required=False
        )

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
        )
        return RevokeResult(revoked=outcome.revoked, error=outcome.error)

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
        _require(settings, "jwt_bearer", "jwt-bearer")
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
            params["scope"] = _join_scopes(requested, settings.scope_separator)
        auth = self._client_auth(settings, endpoints, ctx)
        response = await request_token(
            ctx.http, endpoints.token, auth, params, scope_separator=settings.scope_separator
        )
        granted = requested if response.scopes is None else response.scopes
        await self._refuse_widened(ctx, endpoints, auth, response, granted, requested)
        return await self._token_set(
            ctx,
            settings,
            endpoints,
            response,
            requested=requested,
            nonce=None,
            id_token_required=False,
        )

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
        _require(settings, "token_exchange", "token")
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
            params["scope"] = _join_scopes(scopes, settings.scope_separator)
        if audience is not None:
            params["audience"] = audience
        if resources:
            params["resource"] = resources
        auth = self._client_auth(settings, endpoints, ctx)
        try:
            response = await request_token(
                ctx.http, endpoints.token, auth, params, scope_separator=settings.scope_separator
            )
        except ProviderError as exc:
            raise _invalid_grant(exc, "the provider refused the subject token") from exc
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

    # -- helpers --------------------------------------------------------------------------

    async def _endpoints(
        self, ctx: HttpContext, settings: OAuthSettings, *, discover: bool = True
    ) -> Endpoints:
        metadata = None
        if settings.issuer is not None and discover:
            metadata = await self._metadata.get(ctx.http, ctx.clock, settings.issuer)
        return Endpoints.resolve(settings, metadata)

    @staticmethod
    def _client_auth(
        settings: OAuthSettings, endpoints: Endpoints, ctx: HttpContext
    ) -> ClientAuth:
        if settings.auth_method != "private_key_jwt":
            return ClientAuth(
                settings.client_id, settings.client_secret or "", settings.auth_method
            )
        key = settings.signing_key
        if key is None:
            raise ProviderError("private_key_jwt needs privateKey", error="invalid_configuration")
        clock, client_id, audience = ctx.clock, settings.client_id, endpoints.token

        def assertion() -> str:
            return client_assertion(key, clock, client_id=client_id, audience=audience)

        return ClientAuth(client_id, method="private_key_jwt", assertion=assertion)

    @staticmethod
    async def _refuse_widened(
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
                ctx.http, endpoints.revocation, auth, response.access_token, "access_token"
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


def _require(settings: OAuthSettings, grant: Grant, subject: SubjectType) -> None:
    if grant not in settings.grants:
        raise UnsupportedOperation(
            f"this oauth connector does not enable the {grant} grant, needed for the "
            f"{subject!r} subject (enabled: {', '.join(settings.grants)}); add it to grants",
            grant=grant,
            subject=subject,
        )


def _join_scopes(scopes: Sequence[str], separator: str) -> str:
    for scope in scopes:
        if not scope or separator in scope or " " in scope:
            raise InvalidRequest("each scope must be a non-empty scope token", field="scopes")
    return separator.join(scopes)


def _with_query(url: str, params: Sequence[tuple[str, str]]) -> str:
    """Append ``params`` to ``url``, keeping a query it already has (RFC 6749 §3.1)."""
    parts = urlsplit(url)
    query = urlencode(list(params))
    joined = f"{parts.query}&{query}" if parts.query else query
    return urlunsplit((parts.scheme, parts.netloc, parts.path, joined, ""))


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


def _invalid_grant(exc: ProviderError, message: str) -> Exception:
    if exc.details.get("error") != "invalid_grant":
        return exc
    details = {k: v for k, v in exc.details.items() if k != "error"}
    return InvalidGrant(message, providerError="invalid_grant", **details)


def _device_error(exc: ProviderError) -> Exception:
    """RFC 8628 §3.5 error codes to Valetkey's errors; anything else stays a ProviderError."""
    code = exc.details.get("error")
    if code == "authorization_pending":
        return AuthorizationPending("the user has not finished the device authorization yet")
    if code == "slow_down":
        return AuthorizationPending(
            "polling too fast: wait 5 seconds longer between polls from now on",
            slowDown=True,
            intervalIncrease=SLOW_DOWN_SECONDS,
        )
    if code == "access_denied":
        return AccessDenied("the user refused the device authorization")
    if code == "expired_token":
        return AuthorizationExpired("the device code expired before the user finished")
    return exc


def _device_start(data: Mapping[str, Any], ctx: HttpContext) -> DeviceStart:
    def optional(name: str, *aliases: str) -> str | None:
        for key in (name, *aliases):
            value = data.get(key)
            if isinstance(value, str) and value:
                return value
        return None

    def required(name: str, *aliases: str) -> str:
        value = optional(name, *aliases)
        if value is None:
            raise ProviderError(
                f"the device authorization response has no {name} (RFC 8628 §3.2)",
                error="invalid_response",
            )
        return value

    device_code = required("device_code")
    user_code = required("user_code")
    # "verification_url": a pre-standard spelling some providers still send.
    verification_uri = required("verification_uri", "verification_url")
    expires_in = data.get("expires_in")
    if isinstance(expires_in, bool) or not isinstance(expires_in, int) or expires_in <= 0:
        raise ProviderError(
            "the device authorization response has no valid expires_in", error="invalid_response"
        )
    interval = data.get("interval", _DEFAULT_DEVICE_INTERVAL)
    if (
        isinstance(interval, bool)
        or not isinstance(interval, int)
        or not 0 <= interval <= _MAX_DEVICE_INTERVAL
    ):
        raise ProviderError(
            "the device authorization response has an invalid interval", error="invalid_response"
        )
    return DeviceStart(
        device_code=device_code,
        user_code=user_code,
        verification_uri=verification_uri,
        verification_uri_complete=optional("verification_uri_complete"),
        expires_at=ctx.clock.now() + timedelta(seconds=min(expires_in, _MAX_DEVICE_LIFETIME)),
        interval=interval or _DEFAULT_DEVICE_INTERVAL,
    )
