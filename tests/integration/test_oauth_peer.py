"""The oauth provider against a real OAuth 2.0 server: panva's oidc-provider, run by node.

Every token here is issued by the peer and checked by the peer (RFC 7662 introspection);
nothing about the server is simulated.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx2
import pytest
from tests.peers import oidc as peers_oidc
from tests.peers.context import TestContext, connector_for
from tests.peers.oidc import (
    OidcProviderPeer,
    PeerNotInstalled,
    confidential_client,
    oidc_peer_fixture,
)

from valetkey.core.models import Connector, Subject, TokenRequest
from valetkey.errors import ProviderError
from valetkey.providers.oauth import OAuthProvider

APP = Subject("app")
API = "https://api.example.test"
# Characters that RFC 6749 §2.3.1 makes us form-encode before base64.
BASIC_SECRET = "b@sic s3cr+t:/~&=%"
POST_SECRET = "post-secret-value"
WEB_SECRET = "web-secret-value"
REDIRECT = "http://127.0.0.1:9/callback"

oidc_peer = oidc_peer_fixture(
    {
        "scopes": ["read", "write", "admin"],
        "clients": [
            confidential_client("basic-app", BASIC_SECRET, scope="read write"),
            confidential_client(
                "post-app", POST_SECRET, auth_method="client_secret_post", scope="read write"
            ),
            confidential_client(
                "web-app",
                WEB_SECRET,
                grant_types=(
                    "authorization_code",
                    "refresh_token",
                    "urn:ietf:params:oauth:grant-type:device_code",
                ),
                redirect_uris=[REDIRECT],
                scope="openid read",
            ),
        ],
        "resourceServers": {API: {"scope": "read write admin", "accessTokenTTL": 120}},
        "ttl": {"ClientCredentials": 300},
    }
)


@pytest.fixture
async def ctx() -> AsyncIterator[TestContext]:
    async with httpx2.AsyncClient() as http:
        yield TestContext(http)


def _connector(peer: OidcProviderPeer, client_id: str, secret: str, **changes: Any) -> Connector:
    data: dict[str, Any] = {
        "tokenUrl": peer.token_url,
        "clientId": client_id,
        "clientSecret": secret,
        "scopes": ["read", "write"],
        "revocationUrl": peer.revocation_url,
        **changes,
    }
    return connector_for(OAuthProvider(), data)


async def test_client_credentials_with_basic_auth(
    ctx: TestContext, oidc_peer: OidcProviderPeer
) -> None:
    """A basic-auth client gets a live token for its configured scopes, expiring as announced."""
    before = oidc_peer.stats()["token"].get("client_credentials", 0)
    connector = _connector(oidc_peer, "basic-app", BASIC_SECRET)
    minted = await OAuthProvider().mint(ctx, connector, TokenRequest(subject=APP))
    assert minted.scopes == ("read", "write")
    assert minted.token_type == "Bearer"
    assert minted.expires_at is not None
    assert (minted.expires_at - ctx.clock.now()).total_seconds() == 300
    info = oidc_peer.introspect(minted.token, "basic-app", BASIC_SECRET)
    assert info["active"] is True
    assert info["client_id"] == "basic-app"
    assert set(info["scope"].split()) == {"read", "write"}
    assert oidc_peer.stats()["token"]["client_credentials"] == before + 1


async def test_client_credentials_with_post_auth(
    ctx: TestContext, oidc_peer: OidcProviderPeer
) -> None:
    """A client registered for client_secret_post authenticates in the body and gets a token."""
    connector = _connector(oidc_peer, "post-app", POST_SECRET, authMethod="client_secret_post")
    minted = await OAuthProvider().mint(ctx, connector, TokenRequest(subject=APP))
    info = oidc_peer.introspect(minted.token, "post-app", POST_SECRET)
    assert info["active"] is True
    assert info["client_id"] == "post-app"


async def test_narrowed_scopes_are_all_the_token_carries(
    ctx: TestContext, oidc_peer: OidcProviderPeer
) -> None:
    """Asking for fewer scopes yields a token the server itself says holds only those."""
    connector = _connector(oidc_peer, "basic-app", BASIC_SECRET)
    minted = await OAuthProvider().mint(ctx, connector, TokenRequest(subject=APP, scopes=("read",)))
    assert minted.scopes == ("read",)
    info = oidc_peer.introspect(minted.token, "basic-app", BASIC_SECRET)
    assert info["scope"] == "read"


async def test_resource_indicator_binds_the_token_to_the_api(
    ctx: TestContext, oidc_peer: OidcProviderPeer
) -> None:
    """An RFC 8707 resource makes a token for that audience, with the resource server's TTL."""
    connector = _connector(oidc_peer, "basic-app", BASIC_SECRET)
    request = TokenRequest(subject=APP, scopes=("write",), resources=(API,))
    minted = await OAuthProvider().mint(ctx, connector, request)
    info = oidc_peer.introspect(minted.token, "basic-app", BASIC_SECRET)
    assert info["aud"] == API
    assert info["scope"] == "write"
    assert minted.expires_at is not None
    assert (minted.expires_at - ctx.clock.now()).total_seconds() == 120


async def test_scope_above_the_clients_registration_is_refused_by_the_peer(
    ctx: TestContext, oidc_peer: OidcProviderPeer
) -> None:
    """The provider's own ceiling holds too: a scope never granted to the client is refused."""
    connector = _connector(oidc_peer, "basic-app", BASIC_SECRET, scopes=["read", "admin"])
    with pytest.raises(ProviderError) as caught:
        await OAuthProvider().mint(ctx, connector, TokenRequest(subject=APP))
    assert caught.value.details["error"] == "invalid_scope"


@pytest.mark.parametrize(
    ("client_id", "secret"),
    [("basic-app", "not-the-secret"), ("no-such-client", "whatever-secret")],
)
async def test_bad_client_credentials_are_invalid_client(
    ctx: TestContext, oidc_peer: OidcProviderPeer, client_id: str, secret: str
) -> None:
    """A wrong secret or an unknown client fails with the provider's invalid_client code."""
    connector = _connector(oidc_peer, client_id, secret)
    with pytest.raises(ProviderError) as caught:
        await OAuthProvider().mint(ctx, connector, TokenRequest(subject=APP))
    assert caught.value.details["error"] == "invalid_client"
    assert caught.value.details["providerStatus"] == 401
    assert secret not in repr(caught.value.to_wire())


async def test_revoke_makes_the_token_inactive(
    ctx: TestContext, oidc_peer: OidcProviderPeer
) -> None:
    """RFC 7009 revocation at the peer: introspection then reports active=false."""
    provider = OAuthProvider()
    connector = _connector(oidc_peer, "basic-app", BASIC_SECRET)
    minted = await provider.mint(ctx, connector, TokenRequest(subject=APP))
    assert oidc_peer.introspect(minted.token, "basic-app", BASIC_SECRET)["active"] is True
    result = await provider.revoke(ctx, connector, minted)
    assert (result.revoked, result.skipped, result.error) == (True, False, None)
    assert oidc_peer.introspect(minted.token, "basic-app", BASIC_SECRET) == {"active": False}


async def test_revoke_without_revocation_url_leaves_the_token_alive(
    ctx: TestContext, oidc_peer: OidcProviderPeer
) -> None:
    """Without a revocation endpoint the result says skipped and the token stays valid."""
    provider = OAuthProvider()
    connector = _connector(oidc_peer, "basic-app", BASIC_SECRET, revocationUrl=None)
    minted = await provider.mint(ctx, connector, TokenRequest(subject=APP))
    result = await provider.revoke(ctx, connector, minted)
    assert result.skipped is True
    assert oidc_peer.introspect(minted.token, "basic-app", BASIC_SECRET)["active"] is True


# -- the peer is ready for the user flows (authorization code + PKCE, refresh, device) --


def test_peer_runs_authorization_code_with_pkce_and_rotates_refresh_tokens(
    oidc_peer: OidcProviderPeer,
) -> None:
    """The peer signs a user in, redeems a PKCE code, and rotates the refresh token on use."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    query = {
        "client_id": "web-app",
        "response_type": "code",
        "redirect_uri": REDIRECT,
        "scope": "openid read",
        "resource": API,
        "state": "st-1",
        "code_challenge": challenge.decode(),
        "code_challenge_method": "S256",
    }
    back = oidc_peer.authorize(f"{oidc_peer.authorization_url}?{urlencode(query)}", login="alice")
    params = parse_qs(urlsplit(back).query)
    assert back.startswith(REDIRECT)
    assert params["state"] == ["st-1"]
    auth = ("web-app", WEB_SECRET)
    tokens = httpx2.post(
        oidc_peer.token_url,
        auth=auth,
        data={
            "grant_type": "authorization_code",
            "code": params["code"][0],
            "redirect_uri": REDIRECT,
            "code_verifier": verifier,
            "resource": API,
        },
    ).json()
    assert "refresh_token" in tokens, tokens
    info = oidc_peer.introspect(tokens["access_token"], "web-app", WEB_SECRET)
    assert (info["sub"], info["aud"], info["scope"]) == ("alice", API, "read")
    refreshed = httpx2.post(
        oidc_peer.token_url,
        auth=auth,
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
    ).json()
    assert refreshed["refresh_token"] != tokens["refresh_token"]
    reused = httpx2.post(
        oidc_peer.token_url,
        auth=auth,
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
    )
    assert reused.json()["error"] == "invalid_grant"
    assert oidc_peer.stats()["token"]["refresh_token"] >= 2


def test_peer_runs_the_device_flow(oidc_peer: OidcProviderPeer) -> None:
    """RFC 8628 at the peer: pending until the user approves, then tokens for that user."""
    auth = ("web-app", WEB_SECRET)
    device = httpx2.post(
        oidc_peer.device_authorization_url, auth=auth, data={"scope": "openid read"}
    ).json()
    poll = {
        "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
        "device_code": device["device_code"],
    }
    pending = httpx2.post(oidc_peer.token_url, auth=auth, data=poll).json()
    assert pending["error"] == "authorization_pending"
    oidc_peer.approve_device(device["user_code"], login="bob")
    tokens = httpx2.post(oidc_peer.token_url, auth=auth, data=poll).json()
    assert "access_token" in tokens, tokens


def test_peer_without_node_modules_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkout without the npm install fails with the command that fixes it."""
    monkeypatch.setattr(peers_oidc, "PEER_DIR", tmp_path)
    with pytest.raises(PeerNotInstalled, match="npm ci"):
        OidcProviderPeer.start({})
