"""The authorization code grant with PKCE: RFC 6749 §4.1 and RFC 7636, OpenID Connect on top.

PKCE S256 is always used (RFC 7636 §4.2), whatever the server advertises; a server that
lists ``code_challenge_methods_supported`` without S256 is refused. With ``openid`` asked
for and an issuer whose keys are known, a nonce is sent and the ID token is required and
verified (nonce, signature, iss, aud, exp).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Sequence
from urllib.parse import urlencode, urlsplit, urlunsplit

from valetkey.core.models import Connector
from valetkey.core.providers import AuthorizationStart, TokenSet
from valetkey.errors import InvalidRequest, UnsupportedOperation
from valetkey.providers.config import check_url
from valetkey.providers.context import HttpContext
from valetkey.providers.oauth.engine import OAuthEngine, join_scopes, require_grant
from valetkey.providers.oauth.settings import OAuthSettings

__all__ = ["AuthorizationCodeGrant", "pkce_challenge"]


def pkce_challenge(verifier: str) -> str:
    """RFC 7636 §4.2 S256: BASE64URL(SHA256(ASCII(code_verifier))), without padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class AuthorizationCodeGrant(OAuthEngine):
    """RFC 6749 §4.1.1 (the authorization request) and §4.1.3 (redeeming the code)."""

    GRANT_TYPE = "authorization_code"

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
        require_grant(settings, "authorization_code", "user")
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
            params.append(("scope", join_scopes(requested, settings.scope_separator)))
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
        require_grant(settings, "authorization_code", "user")
        endpoints = await self._endpoints(ctx, settings)
        params: dict[str, str | tuple[str, ...]] = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": code_verifier,
        }
        if resources:
            params["resource"] = resources
        response = await self._request_token(ctx, settings, endpoints, params)
        return await self._token_set(
            ctx,
            settings,
            endpoints,
            response,
            requested=None,
            nonce=nonce,
            id_token_required=bool(nonce),
        )


def _with_query(url: str, params: Sequence[tuple[str, str]]) -> str:
    """Append ``params`` to ``url``, keeping a query it already has (RFC 6749 §3.1)."""
    parts = urlsplit(url)
    query = urlencode(list(params))
    joined = f"{parts.query}&{query}" if parts.query else query
    return urlunsplit((parts.scheme, parts.netloc, parts.path, joined, ""))
