"""The link's ceiling over everything a token request can widen: scopes (an empty list is the
link's defaults, sent explicitly), RFC 8707 resources and audiences (allow-lists), and tokens
whose granted scopes the provider does not state (refused unless the link allows them).

Against the real oidc-provider peer (what it granted is checked by its RFC 7662 introspection)
and a scripted provider for the answers a real one will not give on demand (no ``scope``, a
wider ``scope``); on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from typing import Any

import httpx2
import pytest
from tests.peers.oidc import OidcProviderPeer, confidential_client, oidc_peer_fixture
from tests.peers.scripted import Reply, ScriptedServer, scripted_server
from typer.testing import CliRunner

from valetkey.cli.app import app
from valetkey.testing import RunningBroker

__all__ = ["scripted_server"]

SECRET = "targets-secret-value"
API = "https://api.example.test/"
OTHER_API = "https://other.example.test/"
oidc_peer = oidc_peer_fixture(
    {
        "scopes": ["read", "write", "admin"],
        "clients": [confidential_client("targets-app", SECRET, scope="read write admin")],
        "resourceServers": {
            API: {"scope": "read write admin", "accessTokenTTL": 120},
            OTHER_API: {"scope": "read write admin", "accessTokenTTL": 120},
        },
        "ttl": {"ClientCredentials": 600},
    }
)


def _attach(broker: RunningBroker, uid: str, data: dict[str, Any], **policy: Any) -> str:
    """Create ``uid`` with ``data``, attach it to a new project with ``policy``; return an identity."""
    service, name = uid.split("/")
    project = name
    with broker.admin() as c:
        assert c.post("/v1/projects", json={"slug": project}).status_code == 201
        created = c.post("/v1/connectors", json={"service": service, "name": name, "data": data})
        assert created.status_code == 201, created.text
        linked = c.post(
            f"/v1/connectors/{uid}/links",
            json={"project": project, "environments": ["development"], **policy},
        )
        assert linked.status_code == 200, linked.text
        token: str = c.post(f"/v1/projects/{project}/development-identity", json={}).json()["token"]
    return token


def _token(broker: RunningBroker, identity: str, uid: str, **body: Any) -> httpx2.Response:
    return httpx2.post(
        f"{broker.url}/v1/connect/token/{uid.replace('/', '%2F')}",
        json={"subject": {"type": "app"}, **body},
        headers={"authorization": f"Bearer {identity}"},
        timeout=10,
    )


def _peer_connector(peer: OidcProviderPeer) -> dict[str, Any]:
    return {
        "tokenUrl": peer.token_url,
        "clientId": "targets-app",
        "clientSecret": SECRET,
        "scopes": ["read", "write", "admin"],
        "revocationUrl": peer.revocation_url,
        "audienceParam": "resource",
    }


def _cc_calls(peer: OidcProviderPeer) -> int:
    return int(peer.stats()["token"].get("client_credentials", 0))


def _introspect(peer: OidcProviderPeer, token: str) -> dict[str, Any]:
    return peer.introspect(token, "targets-app", SECRET)


# -- scopes: an empty request is the link's defaults ------------------------------------------


@pytest.mark.parametrize(
    ("body", "granted"),
    [
        ({"scopes": []}, ["read", "write"]),
        ({}, ["read", "write"]),
        ({"scopes": None}, ["read", "write"]),
        ({"scopes": ["write", "write", "write"]}, ["write"]),
        ({"scopes": ["read"]}, ["read"]),
    ],
)
def test_an_empty_or_absent_scope_list_is_the_links_ceiling_sent_explicitly(
    broker: RunningBroker, oidc_peer: OidcProviderPeer, body: dict[str, Any], granted: list[str]
) -> None:
    """`scopes: []`, an absent or null list get the link's ceiling (never the provider's defaults,
    here read write admin); a subset and duplicates get exactly what was named."""
    identity = _attach(
        broker, "oauth/scopes", _peer_connector(oidc_peer), scopes=["read", "write"]
    )
    answer = _token(broker, identity, "oauth/scopes", **body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["scopes"] == granted
    assert sorted(_introspect(oidc_peer, answer.json()["token"])["scope"].split()) == granted
    assert "metadata" not in answer.json()


def test_empty_and_absent_scopes_share_one_token(
    broker: RunningBroker, oidc_peer: OidcProviderPeer
) -> None:
    """`scopes: []` and no scopes are the same request: one provider call, one token."""
    identity = _attach(broker, "oauth/same", _peer_connector(oidc_peer), scopes=["read"])
    before = _cc_calls(oidc_peer)
    first = _token(broker, identity, "oauth/same", scopes=[])
    second = _token(broker, identity, "oauth/same")
    assert first.status_code == second.status_code == 200, (first.text, second.text)
    assert first.json()["token"] == second.json()["token"]
    assert _cc_calls(oidc_peer) == before + 1


def test_the_scope_parameter_is_always_sent(
    broker: RunningBroker, scripted_server: ScriptedServer
) -> None:
    """What reaches the provider for `[]`, absent and a subset is an explicit `scope`."""
    scripted_server.reply(
        "/token",
        Reply(
            json_body={
                "access_token": "at-1",
                "token_type": "Bearer",
                "expires_in": 600,
                "scope": "read write",
            }
        ),
    )
    data = {
        "tokenUrl": f"{scripted_server.url}/token",
        "clientId": "c",
        "clientSecret": "s-secret-value",
        "scopes": ["read", "write", "admin"],
    }
    identity = _attach(broker, "oauth/sent", data, scopes=["read", "write"])
    assert _token(broker, identity, "oauth/sent", scopes=[]).status_code == 200
    assert scripted_server.requests[-1].form["scope"] == ["read write"]


# -- resources and audiences: allow-lists on the link ----------------------------------------


@pytest.mark.parametrize(
    ("resources", "excess"),
    [
        ([OTHER_API], [OTHER_API]),
        ([API, OTHER_API], [OTHER_API]),
        (["https://api.example.test"], ["https://api.example.test"]),  # not the same string
        (["urn:x:" + "a" * 1990], ["urn:x:" + "a" * 1990]),
    ],
)
def test_a_resource_the_link_does_not_allow_is_refused_without_a_provider_call(
    broker: RunningBroker, oidc_peer: OidcProviderPeer, resources: list[str], excess: list[str]
) -> None:
    """A resource outside the link's allow-list is target_not_allowed naming it; nothing is minted."""
    identity = _attach(
        broker, "oauth/res", _peer_connector(oidc_peer), scopes=["read"], resources=[API]
    )
    before = _cc_calls(oidc_peer)
    refused = _token(broker, identity, "oauth/res", resources=resources)
    assert refused.status_code == 403, refused.text
    error = refused.json()["error"]
    assert (error["code"], error["field"]) == ("target_not_allowed", "resources")
    assert error["resources"] == excess
    assert error["allowedResources"] == [API]
    assert _cc_calls(oidc_peer) == before


def test_without_an_allow_list_no_resource_may_be_named(
    broker: RunningBroker, oidc_peer: OidcProviderPeer
) -> None:
    """A link that names no resources refuses every resource (nothing ungoverned reaches the
    provider); an empty list is no resource and is served."""
    identity = _attach(broker, "oauth/nores", _peer_connector(oidc_peer), scopes=["read"])
    refused = _token(broker, identity, "oauth/nores", resources=[API])
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["code"] == "target_not_allowed"
    served = _token(broker, identity, "oauth/nores", resources=[])
    assert served.status_code == 200, served.text
    assert "aud" not in _introspect(oidc_peer, served.json()["token"])


def test_an_allowed_resource_binds_the_token_to_it(
    broker: RunningBroker, oidc_peer: OidcProviderPeer
) -> None:
    """A resource within the allow-list reaches the provider: the token's audience is that API."""
    identity = _attach(
        broker, "oauth/resok", _peer_connector(oidc_peer), scopes=["read"], resources=[API]
    )
    served = _token(broker, identity, "oauth/resok", resources=[API, API])
    assert served.status_code == 200, served.text
    info = _introspect(oidc_peer, served.json()["token"])
    assert info["aud"] == API
    assert info["scope"] == "read"


@pytest.mark.parametrize(
    ("audience", "allowed", "status"),
    [
        (API, [API], 200),
        (OTHER_API, [API], 403),
        (API, None, 403),
        ([API], [API], 200),
    ],
)
def test_an_audience_is_governed_like_a_resource(
    broker: RunningBroker,
    oidc_peer: OidcProviderPeer,
    audience: Any,
    allowed: list[str] | None,
    status: int,
) -> None:
    """An audience outside the link's allow-list (or with none) is target_not_allowed naming the
    audience field; one inside reaches the provider."""
    policy: dict[str, Any] = {"scopes": ["read"]}
    if allowed is not None:
        policy["audiences"] = allowed
    identity = _attach(broker, "oauth/aud", _peer_connector(oidc_peer), **policy)
    before = _cc_calls(oidc_peer)
    answer = _token(broker, identity, "oauth/aud", audience=audience)
    assert answer.status_code == status, answer.text
    if status == 403:
        error = answer.json()["error"]
        assert (error["code"], error["field"]) == ("target_not_allowed", "audience")
        assert _cc_calls(oidc_peer) == before
    else:
        assert _introspect(oidc_peer, answer.json()["token"])["aud"] == API


def test_the_link_policy_shows_and_validates_the_new_fields(broker: RunningBroker) -> None:
    """The link's policy output carries userIssuers, resources, audiences and allowUnknownScope;
    malformed values are invalid_request naming the field and attach nothing."""
    broker.setup_project("pol")
    with broker.admin() as c:
        created = c.post(
            "/v1/connectors",
            json={
                "service": "oauth",
                "name": "pol",
                "data": {
                    "tokenUrl": "https://idp.example.test/token",
                    "clientId": "c",
                    "clientSecret": "s-secret-value",
                    "scopes": ["read"],
                },
            },
        )
        assert created.status_code == 201, created.text
        for field, value in (
            ("resources", ["not a uri"]),
            ("resources", ["https://api.example.test/#frag"]),
            ("resources", ["relative/path"]),
            ("resources", ["https://x/" + "a" * 2000]),
            ("audiences", ["a\nb"]),
            ("userIssuers", ["https://a|b"]),
            ("userIssuers", ["x" * 256]),
            ("userIssuers", [""]),
            ("allowUnknownScope", "yes"),
        ):
            refused = c.post(
                "/v1/connectors/oauth/pol/links",
                json={"project": "pol", "environments": ["development"], field: value},
            )
            assert refused.status_code in (400, 422), (field, value, refused.text)
            assert refused.json()["error"]["code"] == "invalid_request", (field, refused.text)
        attached = c.post(
            "/v1/connectors/oauth/pol/links",
            json={
                "project": "pol",
                "environments": ["development"],
                "subjects": ["app"],
                "resources": [API, API],
                "audiences": ["aud-1"],
                "userIssuers": ["https://idp.example.test"],
                "allowUnknownScope": True,
            },
        )
        assert attached.status_code == 200, attached.text
        policy = attached.json()["policy"]
        assert policy["resources"] == [API]
        assert policy["audiences"] == ["aud-1"]
        assert policy["userIssuers"] == ["https://idp.example.test"]
        assert policy["allowUnknownScope"] is True
        shown = c.get("/v1/connectors/oauth/pol").json()["links"][0]["policy"]
        assert shown == policy


# -- a provider that does not state the granted scope ----------------------------------------


@pytest.fixture
def silent_provider(scripted_server: ScriptedServer) -> ScriptedServer:
    """A token endpoint that answers without `scope` (and a revocation endpoint)."""
    scripted_server.reply(
        "/token",
        Reply(json_body={"access_token": "at-silent", "token_type": "Bearer", "expires_in": 600}),
    )
    scripted_server.reply("/revoke", Reply(status=200, body=b""))
    return scripted_server


def _silent_connector(server: ScriptedServer) -> dict[str, Any]:
    return {
        "tokenUrl": f"{server.url}/token",
        "revocationUrl": f"{server.url}/revoke",
        "clientId": "c",
        "clientSecret": "s-secret-value",
        "scopes": ["read", "write"],
    }


@pytest.mark.parametrize("body", [{}, {"scopes": []}, {"scopes": ["read"]}])
def test_a_token_of_unknown_scope_is_refused_by_default_and_withdrawn(
    broker: RunningBroker, silent_provider: ScriptedServer, body: dict[str, Any]
) -> None:
    """Without allowUnknownScope, a token whose scope the provider did not state is
    granted_scope_unknown naming the link setting, and is revoked at the provider."""
    identity = _attach(broker, "oauth/silent", _silent_connector(silent_provider))
    refused = _token(broker, identity, "oauth/silent", **body)
    assert refused.status_code == 403, refused.text
    error = refused.json()["error"]
    assert (error["code"], error["setting"]) == ("granted_scope_unknown", "allowUnknownScope")
    assert "at-silent" not in refused.text
    paths = [r.path for r in silent_provider.requests]
    assert paths == ["/token", "/revoke"]
    assert silent_provider.requests[1].form["token"] == ["at-silent"]


def test_a_token_of_unknown_scope_is_served_where_the_link_allows_and_says_so(
    broker: RunningBroker, silent_provider: ScriptedServer
) -> None:
    """With allowUnknownScope the token is served with metadata.grantedScopes "unknown", cached for
    the scopes asked only: the same request is a cache hit, another scope set mints anew."""
    identity = _attach(
        broker, "oauth/allowed", _silent_connector(silent_provider), allowUnknownScope=True
    )
    first = _token(broker, identity, "oauth/allowed", scopes=["read"])
    assert first.status_code == 200, first.text
    assert first.json()["metadata"] == {"grantedScopes": "unknown"}
    assert first.json()["scopes"] == ["read"]
    again = _token(broker, identity, "oauth/allowed", scopes=["read"])
    assert again.json()["tokenId"] == first.json()["tokenId"]
    assert again.json()["metadata"] == {"grantedScopes": "unknown"}
    assert len(silent_provider.requests) == 1
    wider = _token(broker, identity, "oauth/allowed", scopes=["read", "write"])
    assert wider.status_code == 200, wider.text
    assert wider.json()["tokenId"] != first.json()["tokenId"]
    assert len(silent_provider.requests) == 2
    assert silent_provider.requests[1].form["scope"] == ["read write"]


def test_a_granted_scope_wider_than_asked_is_refused_and_withdrawn(
    broker: RunningBroker, scripted_server: ScriptedServer
) -> None:
    """A provider that grants more than asked is refused (never narrowed after the fact: the
    token already holds the wider grant); the token is revoked at the provider."""
    scripted_server.reply(
        "/token",
        Reply(
            json_body={
                "access_token": "at-wide",
                "token_type": "Bearer",
                "expires_in": 600,
                "scope": "read write admin",
            }
        ),
    )
    scripted_server.reply("/revoke", Reply(status=200, body=b""))
    identity = _attach(broker, "oauth/wide", _silent_connector(scripted_server), scopes=["read"])
    refused = _token(broker, identity, "oauth/wide", scopes=[])
    assert refused.status_code >= 400, refused.text
    error = refused.json()["error"]
    assert error["error"] == "scope_widened"
    assert error["widened"] == ["admin", "write"]
    assert "at-wide" not in refused.text
    assert [r.path for r in scripted_server.requests] == ["/token", "/revoke"]
    assert scripted_server.requests[0].form["scope"] == ["read"]


def test_connect_attach_sets_the_new_policy_fields(
    sqlite_broker: RunningBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`valetkey connect attach` takes --user-issuers, --resources, --audiences (comma-separated
    or repeated) and --allow-unknown-scope; the link's policy holds them; a bad value is refused."""
    sqlite_broker.setup_project("clip")
    with sqlite_broker.admin() as c:
        created = c.post(
            "/v1/connectors",
            json={
                "service": "oauth",
                "name": "clip",
                "data": {
                    "tokenUrl": "https://idp.example.test/token",
                    "clientId": "c",
                    "clientSecret": "s-secret-value",
                    "grants": ["client_credentials", "authorization_code"],
                    "authorizationUrl": "https://idp.example.test/authorize",
                },
            },
        )
        assert created.status_code == 201, created.text
    env = {"VALETKEY_URL": sqlite_broker.url, "VALETKEY_API_TOKEN": sqlite_broker.owner_token}
    for name in ("VALETKEY_DATA_DIR", "VALETKEY_TOKEN", "VALETKEY_OIDC_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    base = ["connect", "attach", "oauth/clip", "--project", "clip", "-e", "development"]
    result = CliRunner().invoke(
        app,
        [
            *base,
            "--subjects",
            "app,user",
            "--user-issuers",
            "https://idp-a.example.test,https://idp-b.example.test",
            "--resources",
            API,
            "--resources",
            OTHER_API,
            "--audiences",
            "aud-1",
            "--allow-unknown-scope",
            "--format",
            "json",
        ],
        env=env,
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    policy = json.loads(result.output)["policy"]
    assert policy["userIssuers"] == ["https://idp-a.example.test", "https://idp-b.example.test"]
    assert policy["resources"] == [API, OTHER_API]
    assert policy["audiences"] == ["aud-1"]
    assert policy["allowUnknownScope"] is True
    refused = CliRunner().invoke(
        app, [*base, "--resources", "no-scheme"], env=env, catch_exceptions=False
    )
    assert refused.exit_code != 0
    assert "resources" in refused.output
