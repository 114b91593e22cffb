"""The exchange for an `oauth` client-credentials connector, against a real OAuth server
(oidc-provider, started by the suite), on SQLite and PostgreSQL.

What the broker claims (narrowed scopes, one mint for identical requests, revocation) is
confirmed at the server: its token-endpoint call counts and its RFC 7662 introspection.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx2
from tests.peers.oidc import OidcProviderPeer, confidential_client, oidc_peer_fixture

from valetkey.testing import RunningBroker, running_broker

SECRET = "cc-secret-value"
oidc_peer = oidc_peer_fixture(
    {
        "scopes": ["read", "write", "admin"],
        "clients": [confidential_client("agent-app", SECRET, scope="read write admin")],
        "ttl": {"ClientCredentials": 600},
    }
)


def _connector(peer: OidcProviderPeer) -> dict[str, Any]:
    return {
        "tokenUrl": peer.token_url,
        "clientId": "agent-app",
        "clientSecret": SECRET,
        "scopes": ["read", "write", "admin"],
        "revocationUrl": peer.revocation_url,
    }


def _setup(broker: RunningBroker, peer: OidcProviderPeer, ceiling: list[str]) -> str:
    broker.setup_project("agent")
    with broker.admin() as c:
        assert (
            c.post(
                "/v1/connectors",
                json={"service": "oauth", "name": "acme", "data": _connector(peer)},
            ).status_code
            == 201
        )
        r = c.post(
            "/v1/connectors/oauth/acme/links",
            json={"project": "agent", "environments": ["development"], "scopes": ceiling},
        )
        assert r.status_code == 200, r.text
        token: str = c.post("/v1/projects/agent/development-identity", json={}).json()["token"]
    return token


def _exchange(broker: RunningBroker, identity: str, **body: Any) -> httpx2.Response:
    return httpx2.post(
        f"{broker.url}/v1/connect/token/oauth%2Facme",
        json={"subject": {"type": "app"}, **body},
        headers={"authorization": f"Bearer {identity}"},
        timeout=10,
    )


def _cc_calls(peer: OidcProviderPeer) -> int:
    return int(peer.stats()["token"].get("client_credentials", 0))


def test_identical_requests_share_one_minted_token(
    broker: RunningBroker, oidc_peer: OidcProviderPeer
) -> None:
    """Requests that differ only in scope order get the same token from one provider call."""
    identity = _setup(broker, oidc_peer, ["read", "write"])
    before = _cc_calls(oidc_peer)
    first = _exchange(broker, identity, scopes=["read", "write"])
    second = _exchange(broker, identity, scopes=["write", "read", "read"])
    assert first.status_code == 200, first.text
    assert first.json()["token"] == second.json()["token"]
    assert first.json()["tokenId"] == second.json()["tokenId"]
    assert _cc_calls(oidc_peer) == before + 1
    info = oidc_peer.introspect(first.json()["token"], "agent-app", SECRET)
    assert info["active"] is True
    assert sorted(info["scope"].split()) == ["read", "write"]


def test_a_narrower_request_gets_a_narrower_token(
    broker: RunningBroker, oidc_peer: OidcProviderPeer
) -> None:
    """Asking for fewer scopes than the ceiling mints a token the server says holds only those."""
    identity = _setup(broker, oidc_peer, ["read", "write"])
    narrow = _exchange(broker, identity, scopes=["read"]).json()
    assert narrow["scopes"] == ["read"]
    assert oidc_peer.introspect(narrow["token"], "agent-app", SECRET)["scope"] == "read"
    default = _exchange(broker, identity).json()
    assert sorted(oidc_peer.introspect(default["token"], "agent-app", SECRET)["scope"].split()) == [
        "read",
        "write",
    ]


def test_a_scope_above_the_ceiling_is_refused_without_a_provider_call(
    broker: RunningBroker, oidc_peer: OidcProviderPeer
) -> None:
    """A scope the connector has but the link does not allow is refused by name; the provider is not called."""
    identity = _setup(broker, oidc_peer, ["read"])
    before = _cc_calls(oidc_peer)
    refused = _exchange(broker, identity, scopes=["read", "admin"])
    assert refused.status_code == 403
    error = refused.json()["error"]
    assert error["code"] == "scope_not_allowed"
    assert error["scopes"] == ["admin"]
    assert error["ceiling"] == ["read"]
    assert _cc_calls(oidc_peer) == before


def test_revoking_all_tokens_revokes_them_at_the_provider(
    broker: RunningBroker, oidc_peer: OidcProviderPeer
) -> None:
    """Revoke-all answers truthful counts, the server's introspection confirms, and the next request mints anew."""
    identity = _setup(broker, oidc_peer, ["read", "write"])
    tokens = {
        _exchange(broker, identity, scopes=s).json()["token"]
        for s in (["read"], ["write"], ["read", "write"])
    }
    assert len(tokens) == 3
    with broker.admin() as c:
        counts = c.request(
            "DELETE", "/v1/connect/connectors/oauth%2Facme/tokens", json={"allTokens": True}
        ).json()
    assert counts == {
        "tokensFound": 3,
        "deleted": 3,
        "providerRevoked": 3,
        "providerSkipped": 0,
        "providerFailed": 0,
    }
    for token in tokens:
        assert oidc_peer.introspect(token, "agent-app", SECRET)["active"] is False
    fresh = _exchange(broker, identity, scopes=["read"]).json()["token"]
    assert fresh not in tokens
    assert oidc_peer.introspect(fresh, "agent-app", SECRET)["active"] is True


def test_a_wrong_client_secret_is_a_provider_error_that_names_no_secret(
    broker: RunningBroker, oidc_peer: OidcProviderPeer
) -> None:
    """The provider's refusal comes back as provider_error with its OAuth code, and no secret in the body."""
    identity = _setup(broker, oidc_peer, ["read"])
    with broker.admin() as c:
        r = c.patch(
            "/v1/connectors/oauth/acme",
            json={"data": {**_connector(oidc_peer), "clientSecret": "wrong-secret-xyz"}},
        )
        assert r.status_code == 200, r.text
    refused = _exchange(broker, identity)
    assert refused.status_code == 502
    assert refused.json()["error"]["code"] == "provider_error"
    assert refused.json()["error"]["error"] == "invalid_client"
    assert "wrong-secret-xyz" not in refused.text


def test_a_provider_on_a_private_address_is_refused_without_the_setting(tmp_path: Path) -> None:
    """A broker without --allow-private-networks refuses to call a token URL on a loopback or
    private address (SSRF), with a provider error naming the policy; nothing is minted."""
    with running_broker(tmp_path / "data", allow_private_networks=False) as broker:
        identity = broker.setup_project("agent")
        with broker.admin() as c:
            data = {
                "tokenUrl": "https://169.254.169.254/token",  # a cloud metadata address
                "clientId": "x",
                "clientSecret": "y",
            }
            assert (
                c.post(
                    "/v1/connectors", json={"service": "oauth", "name": "meta", "data": data}
                ).status_code
                == 201
            )
            linked = c.post(
                "/v1/connectors/oauth/meta/links",
                json={"project": "agent", "environments": ["development"]},
            )
            assert linked.status_code == 200, linked.text
        refused = httpx2.post(
            f"{broker.url}/v1/connect/token/oauth%2Fmeta",
            json={"subject": {"type": "app"}},
            headers={"authorization": f"Bearer {identity}"},
        )
        assert refused.status_code == 502
        error = refused.json()["error"]
        assert (error["code"], error["error"]) == ("provider_error", "url_refused")
        assert "network policy" in error["message"]
        with broker.admin() as c:
            assert c.get("/v1/usage").json()["counters"] == {}
