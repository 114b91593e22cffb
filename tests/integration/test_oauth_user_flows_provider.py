"""The oauth provider's user flows against a real OpenID Connect server: panva's oidc-provider.

Endpoints are discovered from the peer's issuer; every token is issued by the peer and
checked by the peer (RFC 7662 introspection). The jwt-bearer (RFC 7523) and token-exchange
(RFC 8693) grants are the peer's extension grants (tests/peers/oidc_provider/server.mjs).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from joserfc.jwk import ECKey, RSAKey
from tests.peers.context import TestContext, connector_for
from tests.peers.oidc import OidcProviderPeer, confidential_client, oidc_peer_fixture

from valetkey.core.clock import FrozenClock, SystemClock
from valetkey.core.models import Connector, Subject, TokenRequest
from valetkey.errors import AuthorizationPending, InvalidGrant, ProviderError
from valetkey.providers.oauth import (
    DEVICE_CODE_GRANT,
    JWT_BEARER_GRANT,
    TOKEN_EXCHANGE_GRANT,
    OAuthProvider,
)
from valetkey.providers.signing import SigningKey

API = "https://api.example.test"
REDIRECT = "http://127.0.0.1:9/callback"
WEB_SECRET = "web-secret-value"
EXCHANGER_SECRET = "exchanger-secret-value"
CONNECTOR_KEY = SigningKey.from_pem(
    ECKey.generate_key("P-256", private=True).as_pem(private=True).decode(), "conn-1"
)
CONNECTOR_PEM = CONNECTOR_KEY.key.as_pem(private=True).decode()
UNTRUSTED_PEM = RSAKey.generate_key(2048, private=True).as_pem(private=True).decode()
UNTRUSTED_EC_PEM = ECKey.generate_key("P-256", private=True).as_pem(private=True).decode()

oidc_peer = oidc_peer_fixture(
    {
        "scopes": ["read", "write"],
        "clients": [
            confidential_client(
                "web-app",
                WEB_SECRET,
                grant_types=(
                    "authorization_code",
                    "refresh_token",
                    DEVICE_CODE_GRANT,
                    JWT_BEARER_GRANT,
                ),
                redirect_uris=[REDIRECT],
                scope="openid read write",
            ),
            {
                "client_id": "key-app",
                "token_endpoint_auth_method": "private_key_jwt",
                "jwks": {"keys": [CONNECTOR_KEY.public_jwk()]},
                "grant_types": ["client_credentials", "authorization_code", JWT_BEARER_GRANT],
                "redirect_uris": [REDIRECT],
                "response_types": ["code"],
                "scope": "openid read write",
            },
            confidential_client(
                "exchanger",
                EXCHANGER_SECRET,
                grant_types=(TOKEN_EXCHANGE_GRANT,),
                scope="read write",
            ),
        ],
        "resourceServers": {API: {"scope": "read write", "accessTokenTTL": 120}},
        "jwtBearer": {"issuers": {"key-app": CONNECTOR_KEY.public_jwk()}},
        "tokenExchange": True,
    }
)


@pytest.fixture
async def ctx() -> AsyncIterator[TestContext]:
    async with httpx2.AsyncClient() as http:
        # Real time: the peer checks assertion expiry, and we check its ID tokens'.
        yield TestContext(http, SystemClock())


@pytest.fixture(scope="module")
def provider() -> OAuthProvider:
    """One long-lived provider, as in the broker (its discovery cache is shared)."""
    return OAuthProvider()


def _web(peer: OidcProviderPeer, provider: OAuthProvider, **changes: Any) -> Connector:
    data: dict[str, Any] = {
        "issuer": peer.issuer,
        "clientId": "web-app",
        "clientSecret": WEB_SECRET,
        "grants": ["authorization_code", "device_code"],
        "scopes": ["read", "write"],
        "userScopes": ["openid", "read"],
        **changes,
    }
    return connector_for(provider, data, name="web")


def _key_app(
    peer: OidcProviderPeer, provider: OAuthProvider, pem: str = CONNECTOR_PEM
) -> Connector:
    data = {
        "issuer": peer.issuer,
        "clientId": "key-app",
        "authMethod": "private_key_jwt",
        "privateKey": pem,
        "privateKeyId": "conn-1",
        "grants": ["client_credentials", "authorization_code", "jwt_bearer"],
        "scopes": ["read", "write"],
    }
    return connector_for(provider, data, name="keyapp")


def _introspect(peer: OidcProviderPeer, token: str) -> dict[str, Any]:
    return peer.introspect(token, "web-app", WEB_SECRET)


async def _consent(
    ctx: TestContext, provider: OAuthProvider, peer: OidcProviderPeer, connector: Connector
) -> Any:
    """Run authorization code + PKCE through the peer's login and consent pages."""
    start = await provider.start_authorization(
        ctx, connector, redirect_uri=REDIRECT, state="state-1", scopes=None, resources=(API,)
    )
    back = peer.authorize(start.url, login="alice")
    params = parse_qs(urlsplit(back).query)
    assert params["state"] == ["state-1"]
    return await provider.exchange_code(
        ctx,
        connector,
        code=params["code"][0],
        redirect_uri=REDIRECT,
        code_verifier=start.code_verifier,
        nonce=start.nonce,
        resources=(API,),
    )


async def test_endpoints_are_discovered_from_the_issuer(
    ctx: TestContext, provider: OAuthProvider, oidc_peer: OidcProviderPeer
) -> None:
    """The peer's RFC 8414 metadata gives every endpoint: token, authorization, device, ..."""
    endpoints = await provider.endpoints(ctx, _web(oidc_peer, provider))
    assert endpoints.token == oidc_peer.token_url
    assert endpoints.authorization == oidc_peer.authorization_url
    assert endpoints.device_authorization == oidc_peer.device_authorization_url
    assert endpoints.revocation == oidc_peer.revocation_url
    assert endpoints.jwks_uri == oidc_peer.jwks_url
    assert endpoints.code_challenge_methods == ("S256",)


async def test_authorization_code_with_pkce_and_a_verified_id_token(
    ctx: TestContext, provider: OAuthProvider, oidc_peer: OidcProviderPeer
) -> None:
    """Consent as alice: the ID token verifies (nonce included), sub is alice, the token is live."""
    tokens = await _consent(ctx, provider, oidc_peer, _web(oidc_peer, provider))
    assert tokens.provider_subject == "alice"
    assert tokens.id_claims["aud"] == "web-app"
    assert tokens.id_claims["iss"] == oidc_peer.issuer
    assert tokens.refresh_token is not None
    info = _introspect(oidc_peer, tokens.access_token)
    assert (info["active"], info["sub"], info["aud"], info["scope"]) == (True, "alice", API, "read")


async def test_a_wrong_verifier_is_refused_by_the_peer(
    ctx: TestContext, provider: OAuthProvider, oidc_peer: OidcProviderPeer
) -> None:
    """PKCE binds the code: redeeming it with another verifier fails with invalid_grant."""
    connector = _web(oidc_peer, provider)
    start = await provider.start_authorization(
        ctx, connector, redirect_uri=REDIRECT, state="s", scopes=("openid", "read")
    )
    code = parse_qs(urlsplit(oidc_peer.authorize(start.url)).query)["code"][0]
    with pytest.raises(ProviderError) as caught:
        await provider.exchange_code(
            ctx,
            connector,
            code=code,
            redirect_uri=REDIRECT,
            code_verifier="x" * 64,
            nonce=start.nonce,
        )
    assert caught.value.details["error"] == "invalid_grant"


async def test_refresh_rotates_and_the_old_token_is_then_invalid_grant(
    ctx: TestContext, provider: OAuthProvider, oidc_peer: OidcProviderPeer
) -> None:
    """The peer rotates on refresh; reusing the old refresh token raises InvalidGrant."""
    connector = _web(oidc_peer, provider)
    tokens = await _consent(ctx, provider, oidc_peer, connector)
    assert tokens.refresh_token is not None
    refreshed = await provider.refresh(
        ctx, connector, refresh_token=tokens.refresh_token, resources=(API,)
    )
    assert refreshed.refresh_token not in (None, tokens.refresh_token)
    assert _introspect(oidc_peer, refreshed.access_token)["sub"] == "alice"
    with pytest.raises(InvalidGrant):
        await provider.refresh(ctx, connector, refresh_token=tokens.refresh_token)


async def test_device_flow_is_pending_until_approved(
    ctx: TestContext, provider: OAuthProvider, oidc_peer: OidcProviderPeer
) -> None:
    """RFC 8628: pending before the user approves, then tokens for that user (ID token verified)."""
    connector = _web(oidc_peer, provider)
    start = await provider.start_device(ctx, connector, scopes=("openid", "read"))
    assert start is not None
    assert start.verification_uri == f"{oidc_peer.url}/device"
    with pytest.raises(AuthorizationPending):
        await provider.poll_device(ctx, connector, device_code=start.device_code)
    oidc_peer.approve_device(start.user_code, login="bob")
    tokens = await provider.poll_device(ctx, connector, device_code=start.device_code)
    assert tokens.provider_subject == "bob"
    assert _introspect(oidc_peer, tokens.access_token)["sub"] == "bob"


async def test_revoking_the_refresh_token_makes_it_inactive(
    ctx: TestContext, provider: OAuthProvider, oidc_peer: OidcProviderPeer
) -> None:
    """RFC 7009 at the discovered endpoint: introspection then says active=false."""
    connector = _web(oidc_peer, provider)
    tokens = await _consent(ctx, provider, oidc_peer, connector)
    assert tokens.refresh_token is not None
    assert _introspect(oidc_peer, tokens.refresh_token)["active"] is True
    result = await provider.revoke_user_token(
        ctx, connector, token=tokens.refresh_token, hint="refresh_token"
    )
    assert (result.revoked, result.skipped) == (True, False)
    assert _introspect(oidc_peer, tokens.refresh_token) == {"active": False}


async def test_private_key_jwt_client_authentication(
    ctx: TestContext, provider: OAuthProvider, oidc_peer: OidcProviderPeer
) -> None:
    """A private_key_jwt client gets tokens twice (a fresh jti each time); a wrong key fails."""
    connector = _key_app(oidc_peer, provider)
    for _ in range(2):
        minted = await provider.mint(ctx, connector, TokenRequest(subject=Subject("app")))
        info = _introspect(oidc_peer, minted.token)
        assert (info["active"], info["client_id"]) == (True, "key-app")
    wrong = _key_app(oidc_peer, provider, pem=UNTRUSTED_PEM)
    with pytest.raises(ProviderError) as caught:
        await provider.mint(ctx, wrong, TokenRequest(subject=Subject("app")))
    assert caught.value.details["error"] == "invalid_client"


async def test_private_key_jwt_with_authorization_code(
    ctx: TestContext, provider: OAuthProvider, oidc_peer: OidcProviderPeer
) -> None:
    """The code is redeemed with a client assertion; without openid there is no ID token or sub."""
    tokens = await _consent(ctx, provider, oidc_peer, _key_app(oidc_peer, provider))
    assert tokens.provider_subject is None
    assert tokens.id_claims == {}
    assert _introspect(oidc_peer, tokens.access_token)["client_id"] == "key-app"


async def test_jwt_bearer_grant_acts_for_the_asserted_subject(
    ctx: TestContext, provider: OAuthProvider, oidc_peer: OidcProviderPeer
) -> None:
    """RFC 7523: the peer verifies the connector-signed assertion and issues a token for sub."""
    tokens = await provider.jwt_bearer(
        ctx,
        _key_app(oidc_peer, provider),
        subject="carol",
        issuer=None,
        audience=None,
        claims={},
        scopes=("read",),
    )
    info = _introspect(oidc_peer, tokens.access_token)
    assert (info["active"], info["sub"], info["scope"], info["client_id"]) == (
        True,
        "carol",
        "read",
        "key-app",
    )
    assert oidc_peer.stats()["token"][JWT_BEARER_GRANT] >= 1


@pytest.mark.parametrize(
    ("pem", "clock_offset", "reason"),
    [
        (UNTRUSTED_EC_PEM, 0, "the assertion signature is invalid"),
        (CONNECTOR_PEM, -600, "the assertion has expired"),
    ],
)
async def test_jwt_bearer_with_a_bad_assertion_is_refused(
    provider: OAuthProvider,
    oidc_peer: OidcProviderPeer,
    pem: str,
    clock_offset: float,
    reason: str,
) -> None:
    """A signature by another key, or an expired assertion, is invalid_grant at the peer."""
    data = {
        "tokenUrl": oidc_peer.token_url,
        "clientId": "web-app",
        "clientSecret": WEB_SECRET,
        "privateKey": pem,
        "privateKeyId": "conn-1",
        "grants": ["jwt_bearer"],
    }
    connector = connector_for(provider, data, name="bad-assertion")
    clock = FrozenClock(datetime.now(UTC) + timedelta(seconds=clock_offset))
    async with httpx2.AsyncClient() as http:
        with pytest.raises(ProviderError) as caught:
            await provider.jwt_bearer(
                TestContext(http, clock),
                connector,
                subject="carol",
                issuer="key-app",
                audience=None,
                claims={},
                scopes=None,
            )
    assert caught.value.details["error"] == "invalid_grant"
    assert caught.value.details["errorDescription"] == reason


async def test_token_exchange_narrows_a_user_token(
    ctx: TestContext, provider: OAuthProvider, oidc_peer: OidcProviderPeer
) -> None:
    """RFC 8693: alice's access token is exchanged for a new one, for alice, for the exchanger."""
    user_tokens = await _consent(ctx, provider, oidc_peer, _web(oidc_peer, provider))
    exchanger = connector_for(
        provider,
        {
            "issuer": oidc_peer.issuer,
            "clientId": "exchanger",
            "clientSecret": EXCHANGER_SECRET,
            "grants": ["token_exchange"],
        },
        name="exchanger",
    )
    exchanged = await provider.token_exchange(
        ctx,
        exchanger,
        subject_token=user_tokens.access_token,
        subject_token_type="urn:ietf:params:oauth:token-type:access_token",
        scopes=("read",),
        audience="https://b.example.test",
        resources=None,
    )
    assert exchanged.extra["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    info = _introspect(oidc_peer, exchanged.access_token)
    assert (info["sub"], info["client_id"], info["scope"], info["aud"]) == (
        "alice",
        "exchanger",
        "read",
        "https://b.example.test",
    )
    with pytest.raises(ProviderError) as caught:
        await provider.token_exchange(
            ctx,
            exchanger,
            subject_token=user_tokens.access_token,
            subject_token_type="urn:ietf:params:oauth:token-type:access_token",
            scopes=("write",),
            audience=None,
            resources=None,
        )
    assert caught.value.details["error"] == "invalid_scope"
    with pytest.raises(InvalidGrant):
        await provider.token_exchange(
            ctx,
            exchanger,
            subject_token="not-a-token-the-peer-issued",
            subject_token_type="urn:ietf:params:oauth:token-type:access_token",
            scopes=None,
            audience=None,
            resources=None,
        )


async def test_a_path_suffixed_issuer_is_discovered_and_used() -> None:
    """Issuer http://host/tenant: no RFC 8414 document is served, the OIDC one (appended) is."""
    config = {
        "mountPath": "/tenant",
        "clients": [
            confidential_client(
                "web-app",
                WEB_SECRET,
                grant_types=("authorization_code", "refresh_token"),
                redirect_uris=[REDIRECT],
                scope="openid",
            )
        ],
    }
    provider = OAuthProvider()
    with OidcProviderPeer.start(config) as peer:
        assert peer.issuer == f"{peer.url}/tenant"
        connector = _web(peer, provider, userScopes=["openid"], scopes=[])
        async with httpx2.AsyncClient() as http:
            ctx = TestContext(http, SystemClock())
            endpoints = await provider.endpoints(ctx, connector)
            assert endpoints.token == f"{peer.url}/tenant/token"
            start = await provider.start_authorization(
                ctx, connector, redirect_uri=REDIRECT, state="s", scopes=None
            )
            code = parse_qs(urlsplit(peer.authorize(start.url)).query)["code"][0]
            tokens = await provider.exchange_code(
                ctx,
                connector,
                code=code,
                redirect_uri=REDIRECT,
                code_verifier=start.code_verifier,
                nonce=start.nonce,
            )
    assert tokens.id_claims["iss"] == f"{peer.url}/tenant"
    assert tokens.provider_subject == "alice"
