"""The oauth provider's user flows on the wire, against a scripted server on 127.0.0.1.

Exact request shapes (PKCE, client assertions, jwt-bearer and token-exchange forms,
discovery URLs) and the handling of answers a real server gives only on demand
(issuer mismatch, slow_down, no rotation). The real server runs in
tests/integration/test_oauth_user_flows_provider.py.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey
from tests.peers.context import TestContext, connector_for
from tests.peers.scripted import Reply, ScriptedServer, scripted_server

from valetkey.core.models import Connector, Subject, TokenRequest
from valetkey.errors import (
    AccessDenied,
    AuthorizationExpired,
    AuthorizationPending,
    InvalidGrant,
    ProviderError,
    UnsupportedOperation,
)
from valetkey.providers.oauth import (
    JWT_BEARER_GRANT,
    TOKEN_EXCHANGE_GRANT,
    OAuthProvider,
    pkce_challenge,
)
from valetkey.providers.oauth.client import CLIENT_ASSERTION_TYPE
from valetkey.providers.oauth.discovery import well_known_urls

__all__ = ["scripted_server"]

SECRET = "client-secret-value"
REDIRECT = "https://broker.example.test/v1/connect/callback"
RSA_KEY = RSAKey.generate_key(2048, private=True)
EC_KEY = ECKey.generate_key("P-256", private=True)
ISSUER_KEY = RSAKey.generate_key(2048, private=True, parameters={"kid": "issuer-1"})
TOKENS = Reply(
    json_body={
        "access_token": "at-1",
        "token_type": "Bearer",
        "expires_in": 600,
        "refresh_token": "rt-1",
        "scope": "openid read",
    }
)
ALL_GRANTS = [
    "client_credentials",
    "authorization_code",
    "device_code",
    "jwt_bearer",
    "token_exchange",
]


@pytest.fixture
async def ctx() -> AsyncIterator[TestContext]:
    async with httpx2.AsyncClient() as http:
        yield TestContext(http)


def _pem(key: RSAKey | ECKey) -> str:
    return key.as_pem(private=True).decode()


def _metadata(server: ScriptedServer, issuer: str, **changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "issuer": issuer,
        "authorization_endpoint": f"{server.url}/authorize",
        "token_endpoint": f"{server.url}/token",
        "device_authorization_endpoint": f"{server.url}/device",
        "revocation_endpoint": f"{server.url}/revoke",
        "jwks_uri": f"{server.url}/jwks",
        "code_challenge_methods_supported": ["S256"],
        "id_token_signing_alg_values_supported": ["RS256"],
    }
    doc.update(changes)
    return {k: v for k, v in doc.items() if v is not None}


def _serve_discovery(server: ScriptedServer, path: str = "", **changes: Any) -> str:
    issuer = f"{server.url}{path}"
    server.reply(
        f"/.well-known/oauth-authorization-server{path}",
        Reply(json_body=_metadata(server, issuer, **changes)),
    )
    server.reply("/jwks", Reply(json_body={"keys": [ISSUER_KEY.as_dict(private=False)]}))
    return issuer


def _connector(server: ScriptedServer, **changes: Any) -> Connector:
    data: dict[str, Any] = {
        "tokenUrl": f"{server.url}/token",
        "authorizationUrl": f"{server.url}/authorize",
        "deviceAuthorizationUrl": f"{server.url}/device",
        "revocationUrl": f"{server.url}/revoke",
        "clientId": "web-app",
        "clientSecret": SECRET,
        "privateKey": _pem(RSA_KEY),
        "privateKeyId": "conn-key",
        "grants": ALL_GRANTS,
        "scopes": ["read", "write"],
        **changes,
    }
    return connector_for(OAuthProvider(), {k: v for k, v in data.items() if v is not None})


def _query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


def _decode(token: str, key: RSAKey | ECKey) -> dict[str, Any]:
    public = type(key).import_key(key.as_dict(private=False))
    decoded = jwt.decode(token, public, algorithms=["RS256", "ES256"])
    return {"header": decoded.header, **decoded.claims}


def _id_token(ctx: TestContext, issuer: str, **claims: Any) -> str:
    now = int(ctx.clock.timestamp())
    body = {"iss": issuer, "aud": "web-app", "sub": "alice", "iat": now, "exp": now + 300}
    body.update(claims)
    return jwt.encode({"alg": "RS256", "kid": "issuer-1"}, body, ISSUER_KEY)


# -- discovery -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("issuer", "rfc8414", "openid"),
    [
        (
            "https://h.example",
            "https://h.example/.well-known/oauth-authorization-server",
            "https://h.example/.well-known/openid-configuration",
        ),
        (
            "https://h.example/tenant/a",
            "https://h.example/.well-known/oauth-authorization-server/tenant/a",
            "https://h.example/tenant/a/.well-known/openid-configuration",
        ),
        (
            "https://h.example:8443/t/",
            "https://h.example:8443/.well-known/oauth-authorization-server/t",
            "https://h.example:8443/t/.well-known/openid-configuration",
        ),
    ],
)
def test_well_known_urls_insert_for_rfc8414_and_append_for_oidc(
    issuer: str, rfc8414: str, openid: str
) -> None:
    """RFC 8414 §3.1 puts the well-known segment before the path; OIDC Discovery after it."""
    assert well_known_urls(issuer) == (rfc8414, openid)


async def test_discovery_uses_rfc8414_for_a_path_suffixed_issuer(
    ctx: TestContext, scripted_server: ScriptedServer
) -> None:
    """Endpoints come from /.well-known/oauth-authorization-server/tenant, fetched once (cached)."""
    issuer = _serve_discovery(scripted_server, "/tenant")
    provider = OAuthProvider()
    connector = connector_for(
        provider,
        {
            "issuer": issuer,
            "clientId": "web-app",
            "clientSecret": SECRET,
            "grants": ["device_code"],
        },
    )
    endpoints = await provider.endpoints(ctx, connector)
    assert endpoints.token == f"{scripted_server.url}/token"
    assert endpoints.device_authorization == f"{scripted_server.url}/device"
    await provider.endpoints(ctx, connector)
    paths = [r.path for r in scripted_server.requests]
    assert paths == ["/.well-known/oauth-authorization-server/tenant"]


async def test_discovery_falls_back_to_openid_configuration_appended(
    ctx: TestContext, scripted_server: ScriptedServer
) -> None:
    """Without an RFC 8414 document the OIDC one at issuer + /.well-known/... is used."""
    issuer = f"{scripted_server.url}/tenant"
    scripted_server.reply(
        "/tenant/.well-known/openid-configuration",
        Reply(
            json_body=_metadata(scripted_server, issuer, token_endpoint=f"{scripted_server.url}/t2")
        ),
    )
    provider = OAuthProvider()
    connector = connector_for(provider, {"issuer": issuer, "clientId": "c", "clientSecret": SECRET})
    endpoints = await provider.endpoints(ctx, connector)
    assert endpoints.token == f"{scripted_server.url}/t2"
    assert [r.path for r in scripted_server.requests] == [
        "/.well-known/oauth-authorization-server/tenant",
        "/tenant/.well-known/openid-configuration",
    ]


async def test_discovery_cache_expires_after_its_ttl(
    ctx: TestContext, scripted_server: ScriptedServer
) -> None:
    """A cached document is fetched again once its time-to-live has passed."""
    issuer = _serve_discovery(scripted_server)
    provider = OAuthProvider(metadata_ttl_seconds=60)
    connector = connector_for(provider, {"issuer": issuer, "clientId": "c", "clientSecret": SECRET})
    await provider.endpoints(ctx, connector)
    ctx.clock.advance(61)  # type: ignore[attr-defined]
    await provider.endpoints(ctx, connector)
    assert len(scripted_server.requests) == 2


@pytest.mark.parametrize("other", ["{url}/other", "{url}/tenant/", "{url}"])
async def test_a_document_for_another_issuer_is_refused(
    ctx: TestContext, scripted_server: ScriptedServer, other: str
) -> None:
    """The metadata's issuer must equal the configured one exactly (RFC 8414 §3.3)."""
    issuer = f"{scripted_server.url}/tenant"
    scripted_server.reply(
        "/.well-known/oauth-authorization-server/tenant",
        Reply(json_body=_metadata(scripted_server, other.format(url=scripted_server.url))),
    )
    provider = OAuthProvider()
    connector = connector_for(provider, {"issuer": issuer, "clientId": "c", "clientSecret": SECRET})
    with pytest.raises(ProviderError) as caught:
        await provider.endpoints(ctx, connector)
    assert caught.value.details["error"] == "issuer_mismatch"
    assert len(scripted_server.requests) == 1  # not skipped over to the OIDC document


async def test_discovered_endpoints_must_be_https_or_loopback(
    ctx: TestContext, scripted_server: ScriptedServer
) -> None:
    """A document pointing an endpoint at plain http elsewhere is refused."""
    issuer = _serve_discovery(scripted_server, token_endpoint="http://evil.example/token")
    provider = OAuthProvider()
    connector = connector_for(provider, {"issuer": issuer, "clientId": "c", "clientSecret": SECRET})
    with pytest.raises(ProviderError) as caught:
        await provider.endpoints(ctx, connector)
    assert caught.value.details["error"] == "invalid_metadata"


async def test_explicit_endpoints_override_discovered_ones(
    ctx: TestContext, scripted_server: ScriptedServer
) -> None:
    """A configured tokenUrl wins over the document's token_endpoint."""
    issuer = _serve_discovery(scripted_server)
    provider = OAuthProvider()
    connector = connector_for(
        provider,
        {
            "issuer": issuer,
            "tokenUrl": "https://other.example/token",
            "clientId": "c",
            "clientSecret": SECRET,
        },
    )
    endpoints = await provider.endpoints(ctx, connector)
    assert endpoints.token == "https://other.example/token"
    assert endpoints.authorization == f"{scripted_server.url}/authorize"


async def test_missing_metadata_is_a_clear_error(
    ctx: TestContext, scripted_server: ScriptedServer
) -> None:
    """Neither document: discovery_failed, naming both URLs tried."""
    provider = OAuthProvider()
    connector = connector_for(
        provider, {"issuer": scripted_server.url, "clientId": "c", "clientSecret": SECRET}
    )
    with pytest.raises(ProviderError) as caught:
        await provider.endpoints(ctx, connector)
    assert caught.value.details["error"] == "discovery_failed"
    assert "openid-configuration" in caught.value.message


# -- authorization code + PKCE -----------------------------------------------------------


async def test_authorization_url_carries_pkce_s256_and_every_parameter(
    ctx: TestContext, scripted_server: ScriptedServer
) -> None:
    """The URL holds client_id, redirect_uri, state, S256 challenge, scope, resources, extras."""
    connector = _connector(
        scripted_server,
        authorizationUrl=f"{scripted_server.url}/authorize?tenant=acme",
        scopeSeparator=",",
        userScopes=["read", "profile"],
        authorizationParams={"prompt": "consent", "access_type": "offline"},
    )
    start = await OAuthProvider().start_authorization(
        ctx,
        connector,
        redirect_uri=REDIRECT,
        state="st-1",
        scopes=None,
        resources=("https://api.example.test", "https://b.example.test"),
        login_hint="alice@example.test",
    )
    assert start.url.startswith(f"{scripted_server.url}/authorize?tenant=acme&")
    query = _query(start.url)
    assert query == {
        "tenant": ["acme"],
        "response_type": ["code"],
        "client_id": ["web-app"],
        "redirect_uri": [REDIRECT],
        "state": ["st-1"],
        "code_challenge": [pkce_challenge(start.code_verifier)],
        "code_challenge_method": ["S256"],
        "scope": ["read,profile"],
        "resource": ["https://api.example.test", "https://b.example.test"],
        "login_hint": ["alice@example.test"],
        "prompt": ["consent"],
        "access_type": ["offline"],
    }
    digest = hashlib.sha256(start.code_verifier.encode()).digest()
    expected = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert query["code_challenge"] == [expected]
    assert 43 <= len(start.code_verifier) <= 128
    assert start.nonce is None  # no issuer: not OpenID Connect
    assert start.code_verifier not in repr(start)


async def test_each_authorization_gets_a_fresh_verifier(
    ctx: TestContext, scripted_server: ScriptedServer
) -> None:
    """Two starts never share a PKCE verifier."""
    connector = _connector(scripted_server)
    provider = OAuthProvider()
    one = await provider.start_authorization(
        ctx, connector, redirect_uri=REDIRECT, state="a", scopes=None
    )
    two = await provider.start_authorization(
        ctx, connector, redirect_uri=REDIRECT, state="b", scopes=None
    )
    assert one.code_verifier != two.code_verifier


async def test_a_server_without_s256_is_refused(
    ctx: TestContext, scripted_server: ScriptedServer
) -> None:
    """code_challenge_methods_supported listing only plain: refused, naming S256."""
    issuer = _serve_discovery(scripted_server, code_challenge_methods_supported=["plain"])
    connector = connector_for(
        OAuthProvider(),
        {
            "issuer": issuer,
            "clientId": "web-app",
            "clientSecret": SECRET,
            "grants": ["authorization_code"],
        },
    )
    with pytest.raises(UnsupportedOperation, match="S256"):
        await OAuthProvider().start_authorization(
            ctx, connector, redirect_uri=REDIRECT, state="s", scopes=("read",)
        )


async def test_a_server_that_does_not_list_methods_still_gets_s256(
    ctx: TestContext, scripted_server: ScriptedServer
) -> None:
    """No code_challenge_methods_supported: S256 is sent anyway."""
    issuer = _serve_discovery(scripted_server, code_challenge_methods_supported=None)
    connector = connector_for(
        OAuthProvider(),
        {
            "issuer": issuer,
            "clientId": "web-app",
            "clientSecret": SECRET,
            "grants": ["authorization_code"],
        },
    )
    start = await OAuthProvider().start_authorization(
        ctx, connector, redirect_uri=REDIRECT, state="s", scopes=("read",)
    )
    assert _query(start.url)["code_challenge_method"] == ["S256"]


async def test_code_exchange_sends_the_verifier_and_verifies_the_id_token(
    ctx: TestContext, scripted_server: ScriptedServer
) -> None:
    """OIDC: a nonce is sent, the ID token verified by the JWKS, and its sub is provider_subject."""
    issuer = _serve_discovery(scripted_server)
    provider = OAuthProvider()
    connector = connector_for(
        provider,
        {
            "issuer": issuer,
            "clientId": "web-app",
            "clientSecret": SECRET,
            "grants": ["authorization_code"],
        },
    )
    start = await provider.start_authorization(
        ctx, connector, redirect_uri=REDIRECT, state="s", scopes=("openid", "read")
    )
    assert start.nonce is not None
    assert _query(start.url)["nonce"] == [start.nonce]
    body = dict(TOKENS.json_body, id_token=_id_token(ctx, issuer, nonce=start.nonce))
    scripted_server.reply("/token", Reply(json_body=body))
    tokens = await provider.exchange_code(
        ctx,
        connector,
        code="code-1",
        redirect_uri=REDIRECT,
        code_verifier=start.code_verifier,
        nonce=start.nonce,
        resources=("https://api.example.test",),
    )
    sent = next(r for r in scripted_server.requests if r.path == "/token")
    assert sent.form == {
        "grant_type": ["authorization_code"],
        "code": ["code-1"],
        "redirect_uri": [REDIRECT],
        "code_verifier": [start.code_verifier],
        "resource": ["https://api.example.test"],
    }
    assert tokens.provider_subject == "alice"
    assert tokens.id_claims["nonce"] == start.nonce
    assert (tokens.access_token, tokens.refresh_token) == ("at-1", "rt-1")
    assert tokens.scopes == ("openid", "read")
    assert tokens.expires_at == ctx.clock.now() + timedelta(seconds=600)
    assert "id_token" not in tokens.extra


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"nonce": "other"}, "nonce_mismatch"),
        ({"nonce": "N", "aud": "someone-else"}, "audience_mismatch"),
        ({"nonce": "N", "iss": "https://evil.example"}, "untrusted_issuer"),
        ({"nonce": "N", "exp": 1}, None),
    ],
)
async def test_a_bad_id_token_is_refused(
    ctx: TestContext, scripted_server: ScriptedServer, claims: dict[str, Any], reason: str | None
) -> None:
    """Wrong nonce, audience, issuer or an expired ID token: invalid_id_token, no tokens."""
    issuer = _serve_discovery(scripted_server)
    provider = OAuthProvider()
    connector = connector_for(
        provider,
        {
            "issuer": issuer,
            "clientId": "web-app",
            "clientSecret": SECRET,
            "grants": ["authorization_code"],
        },
    )
    body = dict(TOKENS.json_body, id_token=_id_token(ctx, issuer, **claims))
    scripted_server.reply("/token", Reply(json_body=body))
    with pytest.raises(ProviderError) as caught:
        await provider.exchange_code(
            ctx, connector, code="c", redirect_uri=REDIRECT, code_verifier="v" * 43, nonce="N"
        )
    assert caught.value.details["error"] == "invalid_id_token"
    if reason is not None:
        assert caught.value.details["reason"] == reason


async def test_an_oidc_exchange_without_id_token_is_refused(
    ctx: TestContext, scripted_server: ScriptedServer
) -> None:
    """A nonce was sent, so the response must carry an ID token."""
    issuer = _serve_discovery(scripted_server)
    provider = OAuthProvider()
    connector = connector_for(
        provider,
        {
            "issuer": issuer,
            "clientId": "web-app",
            "clientSecret": SECRET,
            "grants": ["authorization_code"],
        },
    )
    scripted_server.reply("/token", TOKENS)
    with pytest.raises(ProviderError) as caught:
        await provider.exchange_code(
            ctx, connector, code="c", redirect_uri=REDIRECT, code_verifier="v" * 43, nonce="N"
        )
    assert caught.value.details["error"] == "invalid_id_token"


# -- client authentication: private_key_jwt ---------------------------------------------


@pytest.mark.parametrize(("key", "alg"), [(RSA_KEY, "RS256"), (EC_KEY, "ES256")])
async def test_private_key_jwt_sends_an_rfc7523_client_assertion(
    ctx: TestContext, scripted_server: ScriptedServer, key: RSAKey | ECKey, alg: str
) -> None:
    """iss = sub = client_id, aud = token endpoint, jti, exp - iat ≤ 300, signed by the key."""
    connector = _connector(
        scripted_server, authMethod="private_key_jwt", clientSecret=None, privateKey=_pem(key)
    )
    scripted_server.reply("/token", TOKENS)
    await OAuthProvider().refresh(ctx, connector, refresh_token="rt-0")
    sent = scripted_server.requests[0]
    assert "Authorization" not in sent.headers
    assert sent.form["client_assertion_type"] == [CLIENT_ASSERTION_TYPE]
    assert sent.form["client_id"] == ["web-app"]
    claims = _decode(sent.form["client_assertion"][0], key)
    assert claims["header"]["alg"] == alg
    assert claims["header"]["kid"] == "conn-key"
    assert claims["iss"] == claims["sub"] == "web-app"
    assert claims["aud"] == f"{scripted_server.url}/token"
    assert claims["iat"] == int(ctx.clock.timestamp())
    assert 0 < claims["exp"] - claims["iat"] <= 300
    assert len(claims["jti"]) >= 16


async def test_each_client_assertion_has_a_new_jti(
    ctx: TestContext, scripted_server: ScriptedServer
) -> None:
    """Assertions are single-use: two calls, two jti."""
    connector = _connector(scripted_server, authMethod="private_key_jwt", clientSecret=None)
    scripted_server.reply("/token", TOKENS)
    provider = OAuthProvider()
    await provider.refresh(ctx, connector, refresh_token="rt-0")
    await provider.refresh(ctx, connector, refresh_token="rt-0")
    jtis = {
        _decode(r.form["client_assertion"][0], RSA_KEY)["jti"] for r in scripted_server.requests
    }
    assert len(jtis) == 2


# -- refresh -------------------------------------------------------------------------------


async def test_refresh_returns_the_rotated_refresh_token(
    ctx: TestContext, scripted_server: ScriptedServer
) -> None:
    """A new refresh token in the answer replaces the one sent; a narrower scope is sent."""
    scripted_server.reply(
        "/token", Reply(json_body=dict(TOKENS.json_body, refresh_token="rt-2", scope="read"))
    )
    tokens = await OAuthProvider().refresh(
        ctx, _connector(scripted_server), refresh_token="rt-1", scopes=("read",)
    )
    assert scripted_server.requests[0].form == {
        "grant_type": ["refresh_token"],
        "refresh_token": ["rt-1"],
        "scope": ["read"],
    }
    assert tokens.refresh_token == "rt-2"
    assert tokens.scopes == ("read",)


async def test_refresh_without_rotation_keeps_the_old_refresh_token(
    ctx: TestContext, scripted_server: ScriptedServer
) -> None:
    """No refresh_token in the answer: the one given is returned, unchanged."""
    body = {k: v for k, v in TOKENS.json_body.items() if k != "refresh_token"}
    scripted_server.reply("/token", Reply(json_body=body))
    tokens = await OAuthProvider().refresh(ctx, _connector(scripted_server), refresh_token="rt-1")
    assert tokens.refresh_token == "rt-1"


async def test_refresh_invalid_grant_is_invalid_grant(
    ctx: TestContext, scripted_server: ScriptedServer
) -> None:
    """invalid_grant on refresh raises InvalidGrant; other refusals stay ProviderError."""
    scripted_server.reply("/token", Reply(status=400, json_body={"error": "invalid_grant"}))
    with pytest.raises(InvalidGrant):
        await OAuthProvider().refresh(ctx, _connector(scripted_server), refresh_token="rt-1")
    scripted_server.reply("/token", Reply(status=401, json_body={"error": "invalid_client"}))
    with pytest.raises(ProviderError) as caught:
        await OAuthProvider().refresh(ctx, _connector(scripted_server), refresh_token="rt-1")
    assert caught.value.details["error"] == "invalid_client"


# -- device flow ---------------------------------------------------------------------------


async def test_start_device_posts_scope_and_parses_rfc8628(
    ctx: TestContext, scripted_server: ScriptedServer
) -> None:
    """RFC 8628 §3.1/3.2: client auth + scope; expiry from expires_in; interval defaults to 5."""
    scripted_server.reply(
        "/device",
        Reply(
            json_body={
                "device_code": "dc-1",
                "user_code": "WDJB-MJHT",
                "verification_uri": "https://example.test/device",
                "expires_in": 1800,
            }
        ),
    )
    start = await OAuthProvider().start_device(ctx, _connector(scripted_server), scopes=("read",))
    assert start is not None
    assert scripted_server.requests[0].form == {"scope": ["read"]}
    assert scripted_server.requests[0].headers["Authorization"].startswith("Basic ")
    assert (start.device_code, start.user_code, start.interval) == ("dc-1", "WDJB-MJHT", 5)
    assert start.verification_uri_complete is None
    assert start.expires_at == ctx.clock.now() + timedelta(seconds=1800)


async def test_start_device_is_none_without_a_device_endpoint(
    ctx: TestContext, scripted_server: ScriptedServer
) -> None:
    """No device endpoint, or the grant not enabled: None, no request."""
    provider = OAuthProvider()
    no_grant = _connector(scripted_server, grants=["authorization_code"])
    assert await provider.start_device(ctx, no_grant, scopes=None) is None
    issuer = _serve_discovery(scripted_server, device_authorization_endpoint=None)
    no_endpoint = connector_for(
        provider,
        {"issuer": issuer, "clientId": "c", "clientSecret": SECRET, "grants": ["device_code"]},
    )
    assert await provider.start_device(ctx, no_endpoint, scopes=None) is None
    assert all(r.path != "/device" for r in scripted_server.requests)


@pytest.mark.parametrize(
    ("error", "raised"),
    [
        ("authorization_pending", AuthorizationPending),
        ("slow_down", AuthorizationPending),
        ("access_denied", AccessDenied),
        ("expired_token", AuthorizationExpired),
    ],
)
async def test_device_polling_errors_map_to_valetkey_errors(
    ctx: TestContext, scripted_server: ScriptedServer, error: str, raised: type[Exception]
) -> None:
    """RFC 8628 §3.5 codes become AuthorizationPending, AccessDenied or AuthorizationExpired."""
    scripted_server.reply("/token", Reply(status=400, json_body={"error": error}))
    with pytest.raises(raised) as caught:
        await OAuthProvider().poll_device(ctx, _connector(scripted_server), device_code="dc-1")
    assert scripted_server.requests[0].form == {
        "grant_type": ["urn:ietf:params:oauth:grant-type:device_code"],
        "device_code": ["dc-1"],
    }
    if error == "slow_down":
        details = caught.value.details  # type: ignore[attr-defined]
        assert details == {"slowDown": True, "intervalIncrease": 5}


# -- revocation ------------------------------------------------------------------------------


async def test_revoke_user_token_sends_the_hint(
    ctx: TestContext, scripted_server: ScriptedServer
) -> None:
    """RFC 7009: token and token_type_hint=refresh_token, authenticated."""
    scripted_server.reply("/revoke", Reply(json_body={}))
    result = await OAuthProvider().revoke_user_token(
        ctx, _connector(scripted_server), token="rt-1", hint="refresh_token"
    )
    assert result.revoked is True
    assert scripted_server.requests[0].form == {
        "token": ["rt-1"],
        "token_type_hint": ["refresh_token"],
    }


# -- jwt-bearer ------------------------------------------------------------------------------


async def test_jwt_bearer_sends_an_rfc7523_grant(
    ctx: TestContext, scripted_server: ScriptedServer
) -> None:
    """grant_type jwt-bearer, assertion iss=client_id, sub=user, aud=token endpoint, signed."""
    scripted_server.reply(
        "/token",
        Reply(json_body={"access_token": "at-j", "token_type": "Bearer", "expires_in": 60}),
    )
    tokens = await OAuthProvider().jwt_bearer(
        ctx,
        _connector(scripted_server),
        subject="user-42",
        issuer=None,
        audience=None,
        claims={"tenant": "acme", "sub": "ignored"},
        scopes=("read",),
    )
    form = scripted_server.requests[0].form
    assert form["grant_type"] == [JWT_BEARER_GRANT]
    assert form["scope"] == ["read"]
    claims = _decode(form["assertion"][0], RSA_KEY)
    assert (claims["iss"], claims["sub"], claims["aud"]) == (
        "web-app",
        "user-42",
        f"{scripted_server.url}/token",
    )
    assert claims["tenant"] == "acme"
    assert 0 < claims["exp"] - claims["iat"] <= 300
    assert tokens.access_token == "at-j"
    assert tokens.scopes == ("read",)


async def test_jwt_bearer_through_mint(ctx: TestContext, scripted_server: ScriptedServer) -> None:
    """A jwt-bearer subject in a token request runs the same grant for subject.id."""
    scripted_server.reply(
        "/token", Reply(json_body={"access_token": "at-j", "token_type": "Bearer"})
    )
    minted = await OAuthProvider().mint(
        ctx, _connector(scripted_server), TokenRequest(subject=Subject("jwt-bearer", "u-1"))
    )
    assert minted.token == "at-j"
    claims = _decode(scripted_server.requests[0].form["assertion"][0], RSA_KEY)
    assert claims["sub"] == "u-1"


@pytest.mark.parametrize(
    ("method", "kwargs"),
    [
        (
            "jwt_bearer",
            {"subject": "u", "issuer": None, "audience": None, "claims": {}, "scopes": None},
        ),
        (
            "token_exchange",
            {
                "subject_token": "t",
                "subject_token_type": "urn:ietf:params:oauth:token-type:access_token",
                "scopes": None,
                "audience": None,
                "resources": None,
            },
        ),
        ("start_authorization", {"redirect_uri": REDIRECT, "state": "s", "scopes": None}),
    ],
)
async def test_grants_not_enabled_are_unsupported_and_named(
    ctx: TestContext, scripted_server: ScriptedServer, method: str, kwargs: dict[str, Any]
) -> None:
    """A subject whose grant is not enabled: UnsupportedOperation, naming the grants field."""
    connector = _connector(scripted_server, grants=["client_credentials"])
    with pytest.raises(UnsupportedOperation) as caught:
        await getattr(OAuthProvider(), method)(ctx, connector, **kwargs)
    assert "grants" in caught.value.message
    assert scripted_server.requests == []


def test_capabilities_list_the_subjects_of_enabled_grants(scripted_server: ScriptedServer) -> None:
    """Subjects follow grants: app, user, jwt-bearer, token."""
    provider = OAuthProvider()
    assert provider.capabilities(_connector(scripted_server)).subjects == (
        "app",
        "user",
        "jwt-bearer",
        "token",
    )
    only_device = _connector(scripted_server, grants=["device_code"])
    assert provider.capabilities(only_device).subjects == ("user",)


# -- token exchange --------------------------------------------------------------------------


async def test_token_exchange_sends_rfc8693_form(
    ctx: TestContext, scripted_server: ScriptedServer
) -> None:
    """grant_type, subject_token(_type), scope, audience, resource; issued_token_type kept."""
    scripted_server.reply(
        "/token",
        Reply(
            json_body={
                "access_token": "at-x",
                "token_type": "Bearer",
                "expires_in": 60,
                "scope": "read",
                "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
            }
        ),
    )
    tokens = await OAuthProvider().token_exchange(
        ctx,
        _connector(scripted_server),
        subject_token="upstream-token",
        subject_token_type="urn:ietf:params:oauth:token-type:access_token",
        scopes=("read",),
        audience="api-b",
        resources=("https://b.example.test",),
    )
    assert scripted_server.requests[0].form == {
        "grant_type": [TOKEN_EXCHANGE_GRANT],
        "subject_token": ["upstream-token"],
        "subject_token_type": ["urn:ietf:params:oauth:token-type:access_token"],
        "scope": ["read"],
        "audience": ["api-b"],
        "resource": ["https://b.example.test"],
    }
    assert tokens.extra["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    assert tokens.scopes == ("read",)


async def test_token_exchange_without_issued_token_type_is_refused(
    ctx: TestContext, scripted_server: ScriptedServer
) -> None:
    """RFC 8693 §2.2.1 makes issued_token_type required."""
    scripted_server.reply("/token", Reply(json_body={"access_token": "a", "token_type": "Bearer"}))
    with pytest.raises(ProviderError) as caught:
        await OAuthProvider().token_exchange(
            ctx,
            _connector(scripted_server),
            subject_token="t",
            subject_token_type="urn:ietf:params:oauth:token-type:access_token",
            scopes=None,
            audience=None,
            resources=None,
        )
    assert caught.value.details["error"] == "invalid_response"


async def test_token_exchange_widened_scope_is_refused(
    ctx: TestContext, scripted_server: ScriptedServer
) -> None:
    """A token carrying more scopes than asked is not passed on."""
    scripted_server.reply(
        "/token",
        Reply(
            json_body={
                "access_token": "a",
                "token_type": "Bearer",
                "scope": "read admin",
                "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
            }
        ),
    )
    scripted_server.reply("/revoke", Reply(json_body={}))
    with pytest.raises(ProviderError) as caught:
        await OAuthProvider().token_exchange(
            ctx,
            _connector(scripted_server),
            subject_token="t",
            subject_token_type="urn:ietf:params:oauth:token-type:access_token",
            scopes=("read",),
            audience=None,
            resources=None,
        )
    assert caught.value.details["widened"] == ["admin"]
    assert scripted_server.requests[-1].path == "/revoke"
