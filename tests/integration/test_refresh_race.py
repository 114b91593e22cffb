"""User-token refresh under concurrency, against a real OAuth server that rotates refresh tokens.

The peer (oidc-provider) issues 6-second access tokens, rotates the refresh token on every
refresh, and treats the reuse of a rotated-out refresh token as theft: it answers
``invalid_grant`` and revokes every token of the grant (as Slack and several MCP servers do).
Its token endpoint counts calls and errors per grant type; those counts are the evidence.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2
import pytest
from tests.integration.consent_support import (
    authorization_code_tokens,
    setup_user_connector,
    user_token,
)
from tests.peers.oidc import OidcProviderPeer, confidential_client, oidc_peer_fixture

from valetkey.testing import BrokerProcess, RunningBroker, running_broker, spawn_broker

CLIENT, SECRET = "race-app", "race-secret-value"
REDIRECT = "http://127.0.0.1:9/callback"  # the test collects the code itself; nothing listens here
TTL = 6
UID = "oauth/acme"
CONCURRENCY = 40

oidc_peer = oidc_peer_fixture(
    {
        "scopes": ["read", "write"],
        "clients": [
            confidential_client(
                CLIENT,
                SECRET,
                grant_types=("authorization_code", "refresh_token"),
                redirect_uris=[REDIRECT],
                scope="openid read write",
            )
        ],
        "ttl": {"AccessToken": TTL},
        "refreshTokens": {"rotate": True},
    }
)


def _connector(peer: OidcProviderPeer) -> dict[str, Any]:
    return {
        "issuer": peer.issuer,
        "clientId": CLIENT,
        "clientSecret": SECRET,
        "grants": ["authorization_code"],
        "scopes": ["read", "write"],
    }


def _refreshes(peer: OidcProviderPeer) -> tuple[int, int]:
    stats = peer.stats()
    return int(stats["token"].get("refresh_token", 0)), int(
        stats["tokenErrors"].get("refresh_token", 0)
    )


def _import_expired(
    broker: RunningBroker, peer: OidcProviderPeer, identity: str, user: str
) -> None:
    """Give ``user`` a grant: a token pair from the peer, imported as expiring in 1 s; wait for that."""
    tokens = authorization_code_tokens(
        peer, client_id=CLIENT, client_secret=SECRET, redirect_uri=REDIRECT, login=user
    )
    answer = httpx2.post(
        f"{broker.url}/v1/connect/token/oauth%2Facme/import",
        json={
            "subject": {"type": "user", "id": user},
            "accessToken": tokens["access_token"],
            "refreshToken": tokens["refresh_token"],
            "expiresIn": 1,
        },
        headers={"authorization": f"Bearer {identity}"},
    )
    assert answer.status_code == 201, answer.text
    time.sleep(1.2)


def _storm(urls: list[str], identity: str, user: str) -> tuple[list[httpx2.Response], float]:
    """``CONCURRENCY`` simultaneous token requests for ``user``, spread over ``urls``."""
    with httpx2.Client(timeout=30, limits=httpx2.Limits(max_connections=CONCURRENCY)) as http:

        def one(i: int) -> httpx2.Response:
            return user_token(http, urls[i % len(urls)], identity, UID, user)

        start = time.monotonic()
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            responses = list(pool.map(one, range(CONCURRENCY)))
        return responses, time.monotonic() - start


def _check_storm(
    peer: OidcProviderPeer, responses: list[httpx2.Response], refreshes_before: tuple[int, int]
) -> None:
    assert [r.status_code for r in responses] == [200] * CONCURRENCY, [
        r.text for r in responses if r.status_code != 200
    ][:3]
    tokens = {r.json()["token"] for r in responses}
    assert len(tokens) == 1, f"{len(tokens)} different access tokens handed out"
    calls, errors = _refreshes(peer)
    assert (calls - refreshes_before[0], errors - refreshes_before[1]) == (1, 0)
    assert peer.introspect(tokens.pop(), CLIENT, SECRET)["active"] is True


@pytest.fixture
def replicas(postgres_url: str, tmp_path: Path) -> Iterator[tuple[BrokerProcess, BrokerProcess]]:
    """Two `valetkey serve` processes on one PostgreSQL database, with the same keys and public URL."""
    data, public = tmp_path / "data", "http://valetkey.test"
    first = spawn_broker(data, database_url=postgres_url, public_url=public)
    try:
        second = spawn_broker(
            data, database_url=postgres_url, owner_token=first.handle.owner_token, public_url=public
        )
    except BaseException:
        first.stop()
        raise
    try:
        yield first, second
    finally:
        first.stop()
        second.stop()


def test_one_refresh_for_a_storm_over_two_replicas(
    replicas: tuple[BrokerProcess, BrokerProcess], oidc_peer: OidcProviderPeer
) -> None:
    """40 concurrent requests over two replicas for an expired user token cause exactly one refresh, and no reuse."""
    a, b = replicas[0].handle, replicas[1].handle
    identity = setup_user_connector(a, UID, _connector(oidc_peer))
    _import_expired(a, oidc_peer, identity, "alice")
    before = _refreshes(oidc_peer)
    responses, took = _storm([a.url, b.url], identity, "alice")
    _check_storm(oidc_peer, responses, before)
    print(f"postgres, 2 replicas: {CONCURRENCY} requests in {took:.2f}s, 1 refresh")
    # Let the refreshed token really expire at the peer: the second round presents the rotated
    # refresh token, once.
    time.sleep(TTL + 0.5)
    assert oidc_peer.introspect(responses[0].json()["token"], CLIENT, SECRET)["active"] is False
    before = _refreshes(oidc_peer)
    responses, _ = _storm([b.url, a.url], identity, "alice")
    _check_storm(oidc_peer, responses, before)


def test_one_refresh_for_a_storm_on_sqlite(tmp_path: Path, oidc_peer: OidcProviderPeer) -> None:
    """On the embedded SQLite store, 40 concurrent requests for an expired user token cause one refresh."""
    with running_broker(tmp_path / "data") as broker:
        identity = setup_user_connector(broker, UID, _connector(oidc_peer))
        _import_expired(broker, oidc_peer, identity, "bob")
        before = _refreshes(oidc_peer)
        responses, took = _storm([broker.url], identity, "bob")
        _check_storm(oidc_peer, responses, before)
        print(f"sqlite, 1 broker: {CONCURRENCY} requests in {took:.2f}s, 1 refresh")


def _audit(broker: RunningBroker, action: str) -> list[dict[str, Any]]:
    with broker.admin() as c:
        answer = c.get("/v1/audit", params={"action": action})
        assert answer.status_code == 200, answer.text
        rows: list[dict[str, Any]] = answer.json()
        return rows


def test_a_refused_refresh_asks_for_consent_again(
    tmp_path: Path, oidc_peer: OidcProviderPeer
) -> None:
    """A refresh token revoked at the provider turns into user_authorization_required, once, with an audit event."""
    with running_broker(tmp_path / "data") as broker:
        identity = setup_user_connector(broker, UID, _connector(oidc_peer))
        tokens = authorization_code_tokens(
            oidc_peer, client_id=CLIENT, client_secret=SECRET, redirect_uri=REDIRECT, login="carol"
        )
        with httpx2.Client(timeout=10) as http:
            imported = http.post(
                f"{broker.url}/v1/connect/token/oauth%2Facme/import",
                json={
                    "subject": {"type": "user", "id": "carol"},
                    "accessToken": tokens["access_token"],
                    "refreshToken": tokens["refresh_token"],
                    "expiresIn": 1,
                },
                headers={"authorization": f"Bearer {identity}"},
            )
            assert imported.status_code == 201, imported.text
            # RFC 7009 at the peer: the grant's refresh token is revoked behind the broker's back.
            revoked = httpx2.post(
                oidc_peer.revocation_url,
                data={"token": tokens["refresh_token"], "token_type_hint": "refresh_token"},
                auth=(CLIENT, SECRET),
            )
            assert revoked.status_code == 200, revoked.text
            time.sleep(1.2)
            before = _refreshes(oidc_peer)
            first = user_token(http, broker.url, identity, UID, "carol")
            again = user_token(http, broker.url, identity, UID, "carol")
        assert first.status_code == 403, first.text
        error = first.json()["error"]
        # The official clients' code for "the grant became unusable", Valetkey's precise one next to it.
        assert (error["code"], error["valetkeyCode"]) == ("no_token", "user_authorization_required")
        assert error["reason"] == "grant_failed"
        assert error["user"] == "carol"
        assert error["authorizeUrl"] == "/v1/connect/authorize/oauth/acme"
        assert again.json()["error"]["valetkeyCode"] == "user_authorization_required"
        # The refused refresh was tried once; the second request did not present the token again.
        assert _refreshes(oidc_peer) == (before[0] + 1, before[1] + 1)
        deadline = time.monotonic() + 5
        while not (events := _audit(broker, "grant.failed")) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(events) == 1, events
        assert events[0]["subject"] == "user:carol"
        assert events[0]["decision"] == "denied"
